"""Frame objective: soft BCE against the formula, validity masking, gradients into phi."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from selfvos.pretrain.frame import FrameObjective, masked_soft_bce

from .conftest import backbone_grad_ok


def test_matches_the_formula_and_ignores_invalid_items():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 1, 4, 4)
    targets = torch.rand(2, 3, 1, 4, 4)
    valid = torch.tensor([[True, False, True], [False, True, True]])
    loss = masked_soft_bce(logits, targets, valid)
    terms = [F.binary_cross_entropy_with_logits(logits[b, t], targets[b, t]) for b in range(2) for t in range(3) if valid[b, t]]
    torch.testing.assert_close(loss, torch.stack(terms).mean())
    targets[0, 1] = 1 - targets[0, 1]  # invalid item: no effect
    torch.testing.assert_close(masked_soft_bce(logits, targets, valid), loss)
    assert masked_soft_bce(logits, targets, torch.zeros(2, 3, dtype=torch.bool)).item() == 0.0


def test_soft_targets_are_optimal_at_their_logit():
    q = torch.tensor(0.3)
    at_optimum = masked_soft_bce(torch.logit(q).view(1, 1, 1, 1, 1), q.view(1, 1, 1, 1, 1), torch.ones(1, 1, dtype=torch.bool))
    entropy = -(0.3 * math.log(0.3) + 0.7 * math.log(0.7))
    assert math.isclose(at_optimum.item(), entropy, rel_tol=1e-5)
    for delta in (-0.5, 0.5):
        other = masked_soft_bce((torch.logit(q) + delta).view(1, 1, 1, 1, 1), q.view(1, 1, 1, 1, 1), torch.ones(1, 1, dtype=torch.bool))
        assert other > at_optimum


def test_low_resolution_logits_are_upsampled_to_the_mask():
    logits = torch.full((1, 1, 1, 2, 2), 5.0)
    logits[..., 0, 0] = -5.0
    mask = torch.ones(1, 1, 1, 8, 8)
    mask[..., :4, :4] = 0.0
    up = F.interpolate(logits[0], size=(8, 8), mode="bilinear", align_corners=False)
    expected = F.binary_cross_entropy_with_logits(up, mask[0])
    torch.testing.assert_close(masked_soft_bce(logits, mask, torch.ones(1, 1, dtype=torch.bool)), expected)


def test_gradients_into_the_backbone(model, batch):
    feats = model.encode(batch["frames"])
    logits = model.frame_logits(feats)
    assert logits.shape == (2, 3, 1, 8, 8)
    loss = FrameObjective()(logits, batch["pseudo_masks"], batch["mask_valid"])
    loss.backward()
    assert backbone_grad_ok(model) and model.mask_head.weight.grad.abs().sum() > 0
