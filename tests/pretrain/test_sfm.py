"""SfM-Net-style objective: Rodrigues, composed flow geometry, loss formulas, recovery of a moving square."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfvos.pretrain.sfm import (
    SfMConfig,
    SfMObjective,
    axis_angle_to_matrix,
    compose_flow,
    depth_smoothness,
    robust_flow_error,
    skew,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def square_flow(size: int = 32, side: int = 12, shift=(2, 1)):
    """Mask (1, 1, S, S) of a square translating by ``shift`` = (dx, dy) pixels and its flow (1, 2, S, S)."""
    start = (size - side) // 2 - 1
    mask = torch.zeros(1, 1, size, size)
    mask[..., start:start + side, start:start + side] = 1.0
    return mask, torch.cat([mask * shift[0], mask * shift[1]], dim=1)


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum())


def motion(rotation=(0.0, 0.0, 0.0), translation=(0.0, 0.0, 0.0)) -> torch.Tensor:
    return torch.tensor([*rotation, *translation])


def test_rodrigues_90_degrees_about_z():
    rotation = axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2], dtype=torch.float64))
    expected = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(rotation, expected)


def test_rodrigues_matches_the_matrix_exponential_and_is_orthonormal():
    g = torch.Generator().manual_seed(0)
    rotvecs = torch.cat([torch.randn(5, 3, generator=g, dtype=torch.float64),
                         1e-6 * torch.randn(2, 3, generator=g, dtype=torch.float64),
                         torch.zeros(1, 3, dtype=torch.float64)])
    rotations = axis_angle_to_matrix(rotvecs)
    torch.testing.assert_close(rotations, torch.linalg.matrix_exp(skew(rotvecs)))
    eye = torch.eye(3, dtype=torch.float64).expand(8, 3, 3)
    torch.testing.assert_close(rotations @ rotations.transpose(-1, -2), eye)


def test_zero_motion_gives_zero_flow():
    g = torch.Generator().manual_seed(1)
    masks, depth = torch.rand(2, 3, 6, 8, generator=g), 0.5 + torch.rand(2, 1, 6, 8, generator=g)
    flow = compose_flow(masks, torch.zeros(2, 6), torch.zeros(2, 3, 6), depth)
    assert flow.shape == (2, 2, 6, 8)
    assert flow.abs().max() < 1e-5


def test_camera_translation_along_x_gives_f_tx_over_z():
    masks = torch.rand(1, 2, 6, 8)  # objects do not move: masks do not matter
    tx, depth, focal = 0.3, 2.0, 0.8
    camera = motion(translation=(tx, 0.0, 0.0)).unsqueeze(0)
    flow = compose_flow(masks, camera, torch.zeros(1, 2, 6), focal=focal, default_depth=depth)
    torch.testing.assert_close(flow[:, 0], torch.full((1, 6, 8), focal * 8 * tx / depth))
    torch.testing.assert_close(flow[:, 1], torch.zeros(1, 6, 8))


def test_camera_rotation_about_the_optical_axis_rotates_pixels_about_the_centre():
    h, w = 5, 7
    camera = motion(rotation=(0.0, 0.0, math.pi / 2)).unsqueeze(0)
    flow = compose_flow(torch.zeros(1, 1, h, w), camera, torch.zeros(1, 1, 6), default_depth=3.0)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    cx, cy = (w - 1) / 2, (h - 1) / 2
    torch.testing.assert_close(flow[0, 0], cx - (ys - cy) - xs, atol=1e-4, rtol=0)
    torch.testing.assert_close(flow[0, 1], cy + (xs - cx) - ys, atol=1e-4, rtol=0)


def test_object_translation_moves_only_masked_pixels():
    mask, _ = square_flow(size=16, side=6)
    slide = motion(translation=(0.1, -0.05, 0.0)).view(1, 1, 6)
    flow = compose_flow(mask, torch.zeros(1, 6), slide, focal=1.0, default_depth=2.0)
    expected = torch.stack([mask[0, 0] * 16 * 0.1 / 2.0, mask[0, 0] * 16 * -0.05 / 2.0]).unsqueeze(0)
    torch.testing.assert_close(flow, expected)
    half = compose_flow(0.5 * mask, torch.zeros(1, 6), slide, focal=1.0, default_depth=2.0)
    torch.testing.assert_close(half, 0.5 * expected)  # soft masks move points part of the way


def test_object_rotation_about_its_centroid_keeps_the_centroid_pixel():
    mask = torch.zeros(1, 1, 9, 9)
    mask[..., 2:7, 2:7] = 1.0  # centred on pixel (4, 4), the principal point
    spin = motion(rotation=(0.0, 0.0, 0.3)).view(1, 1, 6)
    flow = compose_flow(mask, torch.zeros(1, 6), spin)
    assert flow[0, :, 4, 4].abs().max() < 1e-5
    assert flow[0, :, 2, 2].abs().max() > 0.3
    assert flow[0, :, 0, 0].abs().max() < 1e-6  # outside the mask


def test_flow_loss_is_the_mean_charbonnier_or_l1_error():
    g = torch.Generator().manual_seed(2)
    flow, target = torch.randn(2, 2, 4, 5, generator=g), torch.randn(2, 2, 4, 5, generator=g)
    diff = flow - target
    torch.testing.assert_close(robust_flow_error(flow, target, "charbonnier", 0.1), (diff ** 2 + 0.01).sqrt().mean())
    torch.testing.assert_close(robust_flow_error(flow, target, "l1"), diff.abs().mean())
    confidence = torch.zeros(2, 1, 4, 5)
    confidence[0, 0, 1, 2] = 1.0
    torch.testing.assert_close(robust_flow_error(flow, target, "l1", confidence=confidence),
                               diff[0, :, 1, 2].abs().mean())


def test_depth_smoothness_is_scale_invariant():
    ramp = 1.0 + torch.arange(6.0).view(1, 1, 1, 6).expand(1, 1, 4, 6)
    expected = torch.tensor(1.0 / 3.5)  # d/dx = 1 divided by the mean depth 3.5; d/dy = 0
    torch.testing.assert_close(depth_smoothness(ramp), expected)
    torch.testing.assert_close(depth_smoothness(10.0 * ramp), expected)


def test_objective_terms_and_weighted_loss():
    g = torch.Generator().manual_seed(3)
    masks, depth = torch.rand(1, 2, 8, 8, generator=g), 1.0 + torch.rand(1, 1, 8, 8, generator=g)
    camera, objects = 0.05 * torch.randn(1, 6, generator=g), 0.05 * torch.randn(1, 2, 6, generator=g)
    observed = torch.randn(1, 2, 8, 8, generator=g)
    frame_t, frame_t1 = torch.rand(1, 3, 8, 8, generator=g), torch.rand(1, 3, 8, 8, generator=g)
    cfg = SfMConfig(flow_weight=2.0, photometric_weight=0.5, smooth_flow_weight=0.1, smooth_depth_weight=0.2,
                    smooth_mask_weight=0.3)
    out = SfMObjective(cfg)(masks, camera, objects, observed, depth, frame_t, frame_t1)
    composed = compose_flow(masks, camera, objects, depth)
    torch.testing.assert_close(out["composed_flow"], composed)
    torch.testing.assert_close(out["flow"], robust_flow_error(composed, observed))
    assert out["photometric"] > 0
    expected = (2.0 * out["flow"] + 0.5 * out["photometric"] + 0.1 * out["smooth_flow"]
                + 0.2 * out["smooth_depth"] + 0.3 * out["smooth_mask"])
    torch.testing.assert_close(out["loss"], expected)
    assert all(out[name] > 0 for name in ("smooth_flow", "smooth_depth", "smooth_mask"))


def test_photometric_is_near_zero_with_the_composed_true_motion():
    g = torch.Generator().manual_seed(4)
    big = F.avg_pool2d(torch.rand(1, 3, 44, 44, generator=g), 5, 1)  # (1, 3, 40, 40)
    frame_t, frame_t1 = big[..., 4:36, 4:36], big[..., 4:36, 2:34]  # content moves 2 px right
    tx = 2.0 / 32  # f = 32 px at depth 1: flow = f tx / Z = 2 px
    objective = SfMObjective(SfMConfig(pivot="origin"))
    right = objective(torch.zeros(1, 1, 32, 32), motion(translation=(tx, 0, 0)).unsqueeze(0), torch.zeros(1, 1, 6),
                      frame_t=frame_t, frame_t1=frame_t1)
    still = objective(torch.zeros(1, 1, 32, 32), torch.zeros(1, 6), torch.zeros(1, 1, 6),
                      frame_t=frame_t, frame_t1=frame_t1)
    assert right["flow"] == 0 and right["photometric"] < 0.1 * still["photometric"]


def test_gradients_reach_masks_motions_and_depth():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 2, 12, 12, generator=g, requires_grad=True)
    depth_raw = torch.randn(2, 1, 12, 12, generator=g, requires_grad=True)
    camera = (0.05 * torch.randn(2, 6, generator=g)).requires_grad_()
    objects = (0.05 * torch.randn(2, 2, 6, generator=g)).requires_grad_()
    frame_t, frame_t1 = torch.rand(2, 3, 12, 12, generator=g), torch.rand(2, 3, 12, 12, generator=g)
    cfg = SfMConfig(smooth_flow_weight=0.1, smooth_depth_weight=0.1)
    out = SfMObjective(cfg)(torch.sigmoid(logits), camera, objects, torch.randn(2, 2, 12, 12, generator=g),
                            F.softplus(depth_raw) + 0.1, frame_t, frame_t1)
    out["loss"].backward()
    for tensor in (logits, depth_raw, camera, objects):
        assert torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0


def test_rejects_missing_targets_and_unknown_choices():
    with pytest.raises(ValueError):
        SfMObjective()(torch.rand(1, 1, 4, 4), torch.zeros(1, 6), torch.zeros(1, 1, 6))
    with pytest.raises(ValueError):
        SfMObjective(SfMConfig(flow_penalty="l2"))
    with pytest.raises(ValueError):
        SfMObjective()(torch.rand(1, 1, 4, 4), torch.zeros(1, 6), torch.zeros(1, 1, 6), torch.zeros(1, 2, 5, 4))


def test_flow_optimisation_recovers_the_moving_square():
    """Free mask logits, object and camera motions fitted to the true flow of a square moving (2, 1) px."""
    torch.manual_seed(0)
    mask, flow = square_flow()
    logits = torch.nn.Parameter(0.01 * torch.randn(1, 1, 32, 32))
    objects, camera = torch.nn.Parameter(torch.zeros(1, 1, 6)), torch.nn.Parameter(torch.zeros(1, 6))
    objective = SfMObjective()
    optimiser = torch.optim.Adam([{"params": [logits], "lr": 0.1}, {"params": [objects, camera], "lr": 0.01}])
    for _ in range(150):
        loss = objective(torch.sigmoid(logits), camera, objects, flow)["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert iou(torch.sigmoid(logits[0, 0]) > 0.5, mask[0, 0] > 0.5) > 0.8
    fitted = objective.compose(torch.sigmoid(logits), camera, objects)
    assert (fitted - flow)[:, :, mask[0, 0] > 0].abs().mean() < 0.2
