"""MOREL-style objective: translation flow, photometric and sparsity formulas, recovery of a moving square."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfvos.pretrain.morel import (
    MORELConfig,
    MORELObjective,
    mask_sparsity,
    photometric_map,
    smoothness_l1,
    ssim_map,
    translation_flow,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def texture(size: int, generator: torch.Generator, blur: int = 5) -> torch.Tensor:
    """(1, 3, size, size) smooth random texture stretched to [0, 1]."""
    noise = torch.rand(1, 3, size + blur - 1, size + blur - 1, generator=generator)
    smooth = F.avg_pool2d(noise, blur, 1)
    return (smooth - smooth.amin()) / (smooth.amax() - smooth.amin())


def square_clip(size: int = 32, side: int = 12, shift=(1, 1), seed: int = 0):
    """A textured square translating by ``shift`` = (dx, dy) pixels over a textured static background.

    Returns frame_t, frame_t1 (1, 3, S, S), the square's mask at t (1, 1, S, S) and the true flow (1, 2, S, S).
    """
    g = torch.Generator().manual_seed(seed)
    background, obj = texture(size, g), texture(size, g)
    start = (size - side) // 2 - 1
    mask_t = torch.zeros(1, 1, size, size)
    mask_t[..., start:start + side, start:start + side] = 1.0
    dx, dy = shift
    mask_t1, obj_t1 = (torch.roll(x, (dy, dx), dims=(2, 3)) for x in (mask_t, obj))
    frame_t = background * (1 - mask_t) + obj * mask_t
    frame_t1 = background * (1 - mask_t1) + obj_t1 * mask_t1
    flow = torch.cat([mask_t * dx, mask_t * dy], dim=1)
    return frame_t, frame_t1, mask_t, flow


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_translation_flow_is_the_mask_weighted_sum():
    g = torch.Generator().manual_seed(1)
    masks = torch.rand(2, 3, 5, 7, generator=g)
    translations = torch.randn(2, 3, 2, generator=g)
    camera = torch.randn(2, 2, generator=g)
    flow = translation_flow(masks, translations, camera)
    assert flow.shape == (2, 2, 5, 7)
    for b in range(2):
        for c in range(2):
            expected = sum(masks[b, k] * translations[b, k, c] for k in range(3)) + camera[b, c]
            torch.testing.assert_close(flow[b, c], expected)
    torch.testing.assert_close(translation_flow(masks, translations), flow - camera[:, :, None, None])


def test_photometric_is_zero_with_the_true_flow_and_positive_otherwise():
    g = torch.Generator().manual_seed(2)
    big = texture(40, g)
    frame_t = big[..., 4:36, 4:36]
    frame_t1 = big[..., 3:35, 2:34]  # content moves by (dx, dy) = (2, 1)
    true_flow = torch.zeros(1, 2, 32, 32)
    true_flow[:, 0], true_flow[:, 1] = 2.0, 1.0
    for kind in ("l1", "dssim"):
        right = photometric_map(frame_t, frame_t1, true_flow, kind)
        wrong = photometric_map(frame_t, frame_t1, torch.zeros_like(true_flow), kind)
        assert right.shape == (1, 1, 32, 32)
        # targets p + (2, 1) stay inside the image for x < 30, y < 31; the 3 x 3 SSIM window needs one more pixel
        assert right[..., 1:30, 1:29].abs().max() < 1e-5
        assert wrong[..., 1:30, 1:29].mean() > 0.01


def test_l1_photometric_is_the_channel_mean_absolute_difference():
    g = torch.Generator().manual_seed(3)
    frame_t, frame_t1 = torch.rand(2, 3, 6, 6, generator=g), torch.rand(2, 3, 6, 6, generator=g)
    expected = (frame_t - frame_t1).abs().mean(dim=1, keepdim=True)
    torch.testing.assert_close(photometric_map(frame_t, frame_t1, torch.zeros(2, 2, 6, 6), "l1"), expected)


def test_ssim_of_constant_images_matches_the_formula():
    a, b, c1 = 0.2, 0.7, 0.01 ** 2
    x, y = torch.full((1, 1, 4, 4), a, dtype=torch.float64), torch.full((1, 1, 4, 4), b, dtype=torch.float64)
    expected = (2 * a * b + c1) / (a * a + b * b + c1)  # variances and covariance are 0
    torch.testing.assert_close(ssim_map(x, y), torch.full_like(x, expected))
    torch.testing.assert_close(ssim_map(x, x), torch.ones_like(x))


def test_smoothness_of_a_ramp():
    ramp = torch.arange(6.0).view(1, 1, 1, 6).expand(1, 2, 4, 6) * 3.0  # d/dx = 3, d/dy = 0
    torch.testing.assert_close(smoothness_l1(ramp), torch.tensor(3.0))


def test_sparsity_is_the_mean_mask_times_its_weight():
    g = torch.Generator().manual_seed(4)
    masks = torch.rand(2, 2, 8, 8, generator=g)
    translations = torch.randn(2, 2, 2, generator=g)
    frame_t, frame_t1 = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)
    objective = MORELObjective(MORELConfig(sparsity_on="mask", sparsity_weight=0.3, photometric_weight=2.0))
    out = objective(masks, translations, frame_t, frame_t1)
    torch.testing.assert_close(out["sparsity"], masks.mean())
    torch.testing.assert_close(out["loss"] - 2.0 * out["photometric"], 0.3 * masks.mean())
    flow_mode = mask_sparsity(masks, translations, "flow")
    expected = (masks[:, :, None] * translations[..., None, None]).abs().mean()
    torch.testing.assert_close(flow_mode, expected)


def test_loss_adds_flow_smoothness_and_reports_the_flow():
    g = torch.Generator().manual_seed(5)
    masks, translations = torch.rand(1, 2, 8, 8, generator=g), torch.randn(1, 2, 2, generator=g)
    frame_t, frame_t1 = torch.rand(1, 3, 8, 8, generator=g), torch.rand(1, 3, 8, 8, generator=g)
    cfg = MORELConfig(photometric="l1", sparsity_weight=0.1, smooth_flow_weight=0.5)
    out = MORELObjective(cfg)(masks, translations, frame_t, frame_t1)
    flow = translation_flow(masks, translations)
    torch.testing.assert_close(out["flow"], flow)
    torch.testing.assert_close(out["smooth_flow"], smoothness_l1(flow))
    expected = out["photometric"] + 0.1 * out["sparsity"] + 0.5 * out["smooth_flow"]
    torch.testing.assert_close(out["loss"], expected)


def test_true_masks_and_translation_explain_the_clip_best():
    frame_t, frame_t1, mask, _ = square_clip(shift=(2, 1))
    objective = MORELObjective(MORELConfig(sparsity_weight=0.0))
    right = objective(mask, torch.tensor([[[2.0, 1.0]]]), frame_t, frame_t1)["photometric"]
    for wrong in ([0.0, 0.0], [-2.0, 1.0], [1.0, 2.0]):
        assert objective(mask, torch.tensor([[wrong]]), frame_t, frame_t1)["photometric"] > 2 * right


def test_gradients_reach_masks_translations_and_camera():
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(2, 2, 16, 16, generator=g, requires_grad=True)
    translations = torch.randn(2, 2, 2, generator=g, requires_grad=True)
    camera = torch.randn(2, 2, generator=g, requires_grad=True)
    frame_t, frame_t1 = torch.rand(2, 3, 16, 16, generator=g), torch.rand(2, 3, 16, 16, generator=g)
    out = MORELObjective(MORELConfig(smooth_flow_weight=0.1))(torch.sigmoid(logits), translations, frame_t,
                                                                frame_t1, camera)
    out["loss"].backward()
    for tensor in (logits, translations, camera):
        assert torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0


def test_rejects_unknown_choices_and_mismatched_frames():
    with pytest.raises(ValueError):
        MORELObjective(MORELConfig(photometric="ssim2"))
    with pytest.raises(ValueError):
        MORELObjective(MORELConfig(sparsity_on="masks"))
    with pytest.raises(ValueError):
        MORELObjective()(torch.rand(1, 1, 8, 8), torch.zeros(1, 1, 2), torch.rand(1, 3, 9, 8), torch.rand(1, 3, 9, 8))


def test_photometric_optimisation_recovers_the_moving_square():
    """Free mask logits and a free translation, optimised from the photometric loss alone (default config).

    A 1 px shift per axis: with free per-pixel masks (no network coupling neighbours) and bilinear sampling the
    per-pixel error is then unimodal in the mask; at 2 px the square's trailing band has local minima.
    """
    torch.manual_seed(0)
    frame_t, frame_t1, mask, _ = square_clip(shift=(1, 1))
    logits = torch.nn.Parameter(0.01 * torch.randn(1, 1, 32, 32))
    translations = torch.nn.Parameter(0.5 * torch.randn(1, 1, 2))
    objective = MORELObjective()
    optimiser = torch.optim.Adam([logits, translations], lr=0.1)
    for _ in range(200):
        loss = objective(torch.sigmoid(logits), translations, frame_t, frame_t1)["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert iou(torch.sigmoid(logits[0, 0]) > 0.5, mask[0, 0] > 0.5) > 0.8
    assert math.dist(translations.detach().view(2).tolist(), (1.0, 1.0)) < 0.25
