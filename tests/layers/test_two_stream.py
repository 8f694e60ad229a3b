"""The two-stream blocks: flow normalisation and rendering on hand-made flows (zero flow is white, direction ->
hue, magnitude normalised per frame and resolution invariant), FusionSeg's fusion formula on hand-made scores,
the classifier and motion encoder shapes."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfvos.layers.two_stream import DilatedClassifier, FlowEncoder, PredictionFusion, batch_flows, flow_to_image, \
    fuse_scores, hsv_to_rgb, normalize_flow

pytestmark = pytest.mark.usefixtures("one_thread")


def pixels(*vectors):
    """A (1, 2, 1, n) flow whose pixel i is vectors[i] = (dx, dy)."""
    return torch.tensor(vectors, dtype=torch.float32).t().reshape(1, 2, 1, len(vectors))


def colours(image):
    """(1, 3, 1, n) -> list of n (r, g, b) tuples."""
    return [tuple(round(float(c), 6) for c in image[0, :, 0, i]) for i in range(image.shape[-1])]


def test_normalize_flow_divides_by_the_diagonal():
    flow = torch.full((1, 2, 30, 40), 5.0)
    torch.testing.assert_close(normalize_flow(flow), torch.full_like(flow, 0.1))  # diagonal 50


def test_zero_flow_renders_white():
    image = flow_to_image(torch.zeros(2, 2, 7, 9))
    assert image.shape == (2, 3, 7, 9)
    torch.testing.assert_close(image, torch.ones_like(image))


def test_direction_sets_the_hue():
    # equal magnitudes: every pixel fully saturated, hue = atan2(dy, dx) / 2 pi (y points down)
    flow = pixels((3, 0), (0, 3), (-3, 0), (0, -3), (3 / math.sqrt(2), 3 / math.sqrt(2)))
    right, down, left, up, down_right = colours(flow_to_image(flow))
    assert right == (1.0, 0.0, 0.0)  # hue 0: red
    assert down == (0.5, 1.0, 0.0)  # hue 1/4: chartreuse
    assert left == (0.0, 1.0, 1.0)  # hue 1/2: cyan
    assert up == (0.5, 0.0, 1.0)  # hue 3/4: violet
    assert down_right == (1.0, 0.75, 0.0)  # hue 1/8: orange


def test_hsv_to_rgb_primaries():
    hue = torch.tensor([0.0, 1 / 3, 2 / 3, 1 / 6]).view(1, 1, 1, 4)
    ones = torch.ones_like(hue)
    rgb = hsv_to_rgb(hue, ones, ones)
    assert colours(rgb) == [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 1.0, 0.0)]
    assert colours(hsv_to_rgb(hue, ones * 0.25, ones * 0.5))[0] == (0.5, 0.375, 0.375)  # v - v s ramp


def test_magnitude_is_normalised_per_frame():
    flow = pixels((4, 0), (2, 0), (1, 0), (0, 0))
    image = flow_to_image(flow)
    # saturation = |f| / the frame's largest |f| (4): 1, 0.5, 0.25, 0 -> red fading to white
    assert colours(image) == [(1.0, 0.0, 0.0), (1.0, 0.5, 0.5), (1.0, 0.75, 0.75), (1.0, 1.0, 1.0)]
    torch.testing.assert_close(flow_to_image(3.0 * flow), image)  # a global speed-up reads the same
    # frames are normalised independently: the second frame's largest motion is 1 px, and it is saturated
    two = torch.cat([flow, pixels((1, 0), (0, 0), (0, 0), (0, 0))])
    assert colours(flow_to_image(two)[1:])[0] == (1.0, 0.0, 0.0)


def test_rendering_floor_keeps_sub_threshold_motion_faint():
    h, w = 30, 40  # diagonal 50: the default floor is 0.05 px
    flow = torch.zeros(1, 2, h, w)
    flow[0, 0, 0, 0] = 0.01  # far below the floor: saturation 0.01 / 0.05 = 0.2
    assert colours(flow_to_image(flow)[..., :1, :1]) == [(1.0, 0.8, 0.8)]


def test_flow_inputs_are_resolution_invariant():
    g = torch.Generator().manual_seed(0)
    flow = torch.randn(2, 2, 6, 8, generator=g)
    up = 2.0 * F.interpolate(flow, scale_factor=2, mode="nearest")  # the same motion at twice the resolution
    torch.testing.assert_close(normalize_flow(up), F.interpolate(normalize_flow(flow), scale_factor=2, mode="nearest"))
    torch.testing.assert_close(flow_to_image(up), F.interpolate(flow_to_image(flow), scale_factor=2, mode="nearest"))


def test_fusion_formula_on_hand_made_scores():
    fusion = PredictionFusion(2, mode="max")
    with torch.no_grad():  # plain branches: c = identity, no bias; the product branch sees 2A and M
        for conv in (fusion.appearance, fusion.motion, fusion.joint_appearance, fusion.joint_motion):
            conv.bias.zero_()
        fusion.joint_appearance.weight.mul_(2.0)
    # pixels (bg, fg): A, M
    A = torch.tensor([[-1.0, 3.0], [0.5, 2.0], [2.0, -4.0], [-1.0, -2.0]]).t().reshape(1, 2, 1, 4)
    M = torch.tensor([[2.0, 1.0], [1.0, 2.5], [3.0, 5.0], [-3.0, -1.0]]).t().reshape(1, 2, 1, 4)
    a, m, j = fusion.branches(A, M)
    torch.testing.assert_close(a, A.clamp(min=0))
    torch.testing.assert_close(m, M.clamp(min=0))
    torch.testing.assert_close(j, (2 * A).clamp(min=0) * M.clamp(min=0))
    expected_max = torch.tensor([[2.0, 6.0], [1.0, 10.0], [12.0, 5.0], [0.0, 0.0]]).t().reshape(1, 2, 1, 4)
    torch.testing.assert_close(fusion(A, M), expected_max)
    expected_sum = torch.tensor([[2.0, 10.0], [2.5, 14.5], [17.0, 5.0], [0.0, 0.0]]).t().reshape(1, 2, 1, 4)
    torch.testing.assert_close(fusion(A, M, mode="sum"), expected_sum)
    torch.testing.assert_close(fuse_scores(a, m, j, "sum"), expected_sum)
    with pytest.raises(ValueError, match="fusion mode"):
        fuse_scores(a, m, j, "mean")


def test_fusion_starts_with_every_branch_active():
    fusion = PredictionFusion(2)  # identity 1x1 convolutions, bias 1
    zeros = torch.zeros(1, 2, 3, 3)
    a, m, j = fusion.branches(zeros, zeros)
    for branch in (a, m, j):
        torch.testing.assert_close(branch, torch.ones_like(branch))
    A = torch.full((1, 2, 1, 1), 0.5)
    torch.testing.assert_close(fusion(A, zeros[..., :1, :1]), torch.full_like(A, 1.5))  # max(1.5, 1, 1.5 * 1)


def test_classifier_sums_its_dilated_branches():
    torch.manual_seed(0)
    head = DilatedClassifier(4, 2, rates=(1, 3))
    x = torch.randn(1, 4, 5, 6)
    torch.testing.assert_close(head(x), head.branches[0](x) + head.branches[1](x))
    assert head(x).shape == (1, 2, 5, 6)


@pytest.mark.parametrize("size", [(32, 48), (33, 50)])
def test_flow_encoder_reaches_the_eighth_grid(size):
    encoder = FlowEncoder((4, 4, 8), (2, 4))
    out = encoder(torch.zeros(1, 2, *size))
    assert out.shape == (1, 8, -(-size[0] // 8), -(-size[1] // 8)) and encoder.out_channels == 8


def test_batch_flows_is_checked():
    frames = torch.zeros(1, 3, 3, 8, 8)
    with pytest.raises(ValueError, match="optical flow"):
        batch_flows({"frames": frames}, frames, "X")
    with pytest.raises(ValueError, match="matching frames"):
        batch_flows({"flows": torch.zeros(1, 2, 2, 8, 8)}, frames, "X")
    flows = torch.zeros(1, 3, 2, 8, 8)
    assert batch_flows({"flows": flows}, frames, "X") is flows
