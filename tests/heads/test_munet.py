"""MUNet's formulas on hand-made inputs: the MU-layer's soft-argmin recovers a known shift, its uncertainty
separates a unique match from a textureless one, the MSAM fusion ``F_s * sigmoid(conv(F_m)) + F_s``, and the
inference core (bounded state; the same predictions as the training forward)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import selfvos
from selfvos.heads.munet import MotionAwareSpatialAttention, MotionUncertaintyLayer, MUNetInferenceConfig, MUNetInferenceCore

pytestmark = pytest.mark.usefixtures("one_thread")
RADIUS = 3


def shifted(reference: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """query[y, x] = reference[y + dy, x + dx] (wrapping at the borders)."""
    return torch.roll(reference, shifts=(-dy, -dx), dims=(2, 3))


def interior(h: int, w: int, dy: int, dx: int) -> tuple:
    """The pixels whose match y + dy, x + dx lies in the frame (no wrap)."""
    return slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx))


@pytest.mark.parametrize("dy, dx", [(0, 0), (2, -3), (-1, 1), (3, 3), (-3, 0)])
def test_soft_argmin_recovers_a_known_shift_with_a_confident_match(dy, dx):
    torch.manual_seed(0)
    layer = MotionUncertaintyLayer(64, RADIUS, temperature=0.01, learn_temperature=False)
    reference = torch.randn(2, 32, 14, 18)
    displacement, certainty = layer.match(shifted(reference, dy, dx), reference)
    assert displacement.shape == (2, 2, 14, 18) and certainty.shape == (2, 1, 14, 18)
    ys, xs = interior(14, 18, dy, dx)
    expected = torch.tensor([float(dy), float(dx)]).view(1, 2, 1, 1).expand(2, 2, 14, 18)
    torch.testing.assert_close(displacement[..., ys, xs], expected[..., ys, xs], atol=1e-4, rtol=0)
    assert certainty[..., ys, xs].min() > 0.99  # one unique match: the matching probability peaks at ~1


def test_uncertainty_is_low_for_a_textureless_feature():
    layer = MotionUncertaintyLayer(64, RADIUS, temperature=0.01, learn_temperature=False)
    constant = torch.ones(1, 32, 14, 18) * torch.arange(1.0, 33.0).view(1, 32, 1, 1)  # every pixel alike
    displacement, certainty = layer.match(constant, constant)
    window = (2 * RADIUS + 1) ** 2
    inner = (..., slice(RADIUS, 14 - RADIUS), slice(RADIUS, 18 - RADIUS))
    # every in-frame displacement matches equally: uniform probability, expected displacement 0
    torch.testing.assert_close(certainty[inner], torch.full_like(certainty[inner], 1.0 / window))
    torch.testing.assert_close(displacement[inner], torch.zeros_like(displacement[inner]), atol=1e-5, rtol=0)
    corner = certainty[0, 0, 0, 0]  # only the (R+1)^2 displacements into the frame count at a corner
    assert math.isclose(float(corner), 1.0 / (RADIUS + 1) ** 2, rel_tol=1e-5)
    # the paper's literal Eq. (2), max of the raw cosine, cannot tell this from a unique match
    literal = MotionUncertaintyLayer(64, RADIUS, temperature=0.01, learn_temperature=False, uncertainty="cosine")
    torch.testing.assert_close(literal.match(constant, constant)[1], torch.ones(1, 1, 14, 18))


def test_motion_feature_has_the_semantic_channels_and_the_temperature_learns():
    torch.manual_seed(0)
    layer = MotionUncertaintyLayer(64, RADIUS)
    q, r = layer.reduce(torch.randn(2, 64, 6, 8)), layer.reduce(torch.randn(2, 64, 6, 8))
    assert q.shape == (2, 16, 6, 8)
    motion = layer(q, r)
    assert motion.shape == (2, 64, 6, 8)
    motion.square().mean().backward()
    assert layer.log_scale.grad is not None and float(layer.log_scale.detach()) == pytest.approx(math.log(10.0))


def test_msam_fusion_on_a_hand_case():
    fusion = MotionAwareSpatialAttention(2)
    with torch.no_grad():
        fusion.attention.weight.copy_(torch.tensor([1.0, -1.0]).view(1, 2, 1, 1))
        fusion.attention.bias.zero_()
    semantic = torch.tensor([[2.0, 4.0], [4.0, -8.0]]).T.reshape(1, 2, 1, 2)  # pixel 0: (2, 4), pixel 1: (4, -8)
    motion = torch.tensor([[3.0, 3.0], [math.log(3.0), 0.0]]).T.reshape(1, 2, 1, 2)  # attention 0 -> 1/2, ln 3 -> 3/4
    fused = fusion(semantic, motion)
    # F = F_s * sigmoid(w . F_m) + F_s: (2, 4) * 1/2 + (2, 4) = (3, 6); (4, -8) * 3/4 + (4, -8) = (7, -14)
    torch.testing.assert_close(fused, torch.tensor([[3.0, 6.0], [7.0, -14.0]]).T.reshape(1, 2, 1, 2))


def small_model():
    torch.manual_seed(0)
    return selfvos.create_model("munet", decoder_dim=8, radius=2).eval()


def test_core_state_does_not_grow_with_the_video():
    model = small_model()
    core = MUNetInferenceCore(model, MUNetInferenceConfig(memory_every=2, max_memory=2, dtype="float32"))
    rng = np.random.default_rng(0)
    mask = np.zeros((32, 48), np.uint8)
    mask[8:20, 10:30] = 3

    def state_numel() -> int:
        memory = [core._first, *core._kept] + ([core._previous] if core._previous is not None else [])
        return sum(t.numel() for entry in memory for t in entry) + core._previous_reduced.numel()

    core.step(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8), mask)
    sizes = []
    for _ in range(14):
        core.step(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8))
        sizes.append(state_numel())
    assert core.memory_frames <= 4 and core._previous_reduced.shape == (1, 64, 2, 3)
    # once the kept frames are full the state only alternates with STM's schedule (a kept frame is not also
    # "previous"): periodic with period memory_every, never larger
    assert sizes[6:] == sizes[4:-2] and max(sizes) == max(sizes[4:6])


def test_core_follows_the_training_forward():
    """Memorising every frame, the core's predictions of frames 1 and 2 are the training forward's (the motion
    reference of frame i is frame i-1 in both)."""
    model = small_model()
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (3, 64, 96, 3), dtype=np.uint8)
    mask = np.zeros((64, 96), np.uint8)
    mask[10:40, 20:60], mask[45:60, 60:90] = 1, 2
    batch = {"frames": torch.from_numpy(frames).permute(0, 3, 1, 2)[None].float() / 255.0,
             "masks": torch.from_numpy(mask.astype(np.int64))[None, None].expand(1, 3, 64, 96),
             "object_valid": torch.ones(1, 2, dtype=torch.bool)}
    with torch.no_grad():
        expected = torch.softmax(model(batch)["logits"][0], dim=1)
    core = MUNetInferenceCore(model, MUNetInferenceConfig(memory_every=1, max_memory=4, dtype="float32"))
    core.step(frames[0], mask)
    got = torch.stack([core.step(frames[1]), core.step(frames[2])])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="one-shot"):
        MUNetInferenceCore(model).step(frames[0])
