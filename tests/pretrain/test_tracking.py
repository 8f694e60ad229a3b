"""Forward-backward tracking: correlation and crop against direct formulas, known shifts, gradients."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfvos.pretrain.tracking import (ForwardBackwardTracking, TrackingConfig, correlate, crop, gaussian_target,
                                       soft_argmax)

from .conftest import backbone_grad_ok


@pytest.mark.parametrize("k", [3, 4])
def test_correlate_equals_direct_sum(k):
    torch.manual_seed(0)
    templates, feats = torch.randn(2, 5, k, k), torch.randn(2, 5, 7, 9)
    response, offset = correlate(templates, feats)
    lo = k // 2
    padded = F.pad(feats, (lo, k - 1 - lo, lo, k - 1 - lo))
    for b in range(2):
        for y in (0, 3, 6):
            for x in (0, 4, 8):
                direct = (templates[b] * padded[b, :, y:y + k, x:x + k]).sum() / (k * k)
                torch.testing.assert_close(response[b, y, x], direct, rtol=1e-5, atol=1e-5)
    assert offset == (k - 1) / 2 - k // 2


def test_crop_on_grid_is_slicing_and_soft_argmax_finds_a_peak():
    feats = torch.randn(1, 4, 10, 12)
    patch = crop(feats, torch.tensor([[3.5, 6.5]]), 4)  # centre of rows 2..5, cols 5..8
    torch.testing.assert_close(patch, feats[:, :, 2:6, 5:9])
    response = torch.full((1, 10, 12), -1.0)
    response[0, 7, 2] = 1.0
    torch.testing.assert_close(soft_argmax(response, 0.0, 0.01), torch.tensor([[7.0, 2.0]]), atol=1e-4, rtol=0)
    target = gaussian_target(torch.tensor([[4.0, 5.0]]), 10, 12, 0.0, 1.5)
    assert math.isclose(target.sum().item(), 1.0, rel_tol=1e-6) and target.reshape(10, 12).argmax() == 4 * 12 + 5


def shifted_pair(shift=(2, -3), channels=16, size=24, seed=0):
    """phi of a textured image and of the same image translated by ``shift`` cells (content moves by +shift).

    The texture is smooth on the scale of the Gaussian label (sigma = 1.5 cells for a 6-cell patch), so a
    perfect track can reach a low KL; rougher features give sharper responses and a higher floor.
    """
    g = torch.Generator().manual_seed(seed)
    texture = torch.randn(1, channels, size + 16, size + 16, generator=g)
    for _ in range(2):
        texture = F.avg_pool2d(texture, 5, 1, 2, count_include_pad=False)
    dy, dx = shift
    first = texture[:, :, 8:8 + size, 8:8 + size]
    second = texture[:, :, 8 - dy:8 - dy + size, 8 - dx:8 - dx + size]
    return F.normalize(first, dim=1), F.normalize(second, dim=1)


def test_known_shift_is_recovered_and_the_cycle_loss_is_low():
    tracker = ForwardBackwardTracking(TrackingConfig(patch_fraction=0.25, temperature=0.02, sigma_fraction=0.25))
    first, second = shifted_pair((2, -3))
    centers = torch.tensor([[8.5, 10.5], [14.5, 12.5], [9.5, 15.5]])
    k = tracker.patch_size(24, 24)
    assert k == 6
    template = crop(first.expand(3, -1, -1, -1), centers, k)
    peak, _ = tracker.track(template, second.expand(3, -1, -1, -1))
    torch.testing.assert_close(peak, centers + torch.tensor([2.0, -3.0]), atol=0.1, rtol=0)

    path = torch.stack([first, second], 1).expand(3, -1, -1, -1, -1)
    good, _ = tracker.cycle_loss(path, centers)
    other, _ = shifted_pair(seed=5)
    unrelated = torch.stack([first, other], 1).expand(3, -1, -1, -1, -1)
    bad, _ = tracker.cycle_loss(unrelated, centers)
    assert good.max() < 0.4 and bad.min() > 2.0  # KL in nats; uniform over 24x24 cells would be about 2.8


def test_chain_on_a_steadily_translating_clip():
    tracker = ForwardBackwardTracking(TrackingConfig(temperature=0.02, num_patches=3))
    f0, f1 = shifted_pair((1, 1), seed=2)
    _, f2 = shifted_pair((2, 2), seed=2)
    clip = torch.stack([f0, f1, f2], 1)
    centers = torch.tensor([[10.5, 10.5]])
    chain, first_peak = tracker.cycle_loss(clip, centers)
    torch.testing.assert_close(first_peak, torch.tensor([[11.5, 11.5]]), atol=0.1, rtol=0)
    assert chain.item() < 0.5
    torch.manual_seed(0)
    with_chain = tracker(clip)
    torch.manual_seed(0)
    without = ForwardBackwardTracking(TrackingConfig(temperature=0.02, num_patches=3, chain=False))(clip)
    assert not torch.isclose(with_chain, without)


def test_gradients_flow_into_the_backbone_and_through_the_peak(model, batch):
    feats = model.encode(batch["frames"])
    loss = ForwardBackwardTracking()(feats)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert backbone_grad_ok(model)
    # the tracked peak is differentiable: d(peak)/d(target features) is non-zero
    target = torch.randn(1, 8, 12, 12, requires_grad=True)
    peak, patch = ForwardBackwardTracking().track(torch.randn(1, 8, 3, 3), target)
    peak.sum().backward()
    assert target.grad.abs().sum() > 0 and patch.shape == (1, 8, 3, 3)


def test_needs_two_frames():
    with pytest.raises(ValueError, match="T >= 2"):
        ForwardBackwardTracking()(torch.randn(1, 1, 4, 8, 8))
