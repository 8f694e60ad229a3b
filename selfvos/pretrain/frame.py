"""Frame granularity: rho(phi(X_t)) against the soft pseudo-mask Q_t.

``L_frame = sum_{b,n valid} mean_pixels BCEWithLogits(up(logit_{b,n}), Q_{b,n}) / #valid``

Logits (at feature resolution) are upsampled bilinearly to the pseudo-mask resolution before the
loss, so the supervision keeps the mask's full detail. Targets are soft (any value in [0, 1]); frames
without a pseudo-mask (``valid`` False) contribute nothing. The released MuG code instead thresholds
Q > 0.2 and adds an L1 term on the logits; soft BCE is the method's cross-entropy without that bug.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def masked_soft_bce(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean BCE-with-logits over valid items.

    Args:
        logits: (..., 1, h, w) mask logits at any resolution.
        targets: (..., 1, H, W) soft targets in [0, 1].
        valid: (...) bool, which items have a target.
    Returns:
        scalar; exactly 0 (still attached to ``logits``) when nothing is valid.
    """
    lead = logits.shape[:-3]
    flat_logits = logits.reshape(-1, *logits.shape[-3:])
    flat_targets = targets.reshape(-1, *targets.shape[-3:]).to(flat_logits.dtype)
    if flat_logits.shape[-2:] != flat_targets.shape[-2:]:
        flat_logits = F.interpolate(flat_logits, size=flat_targets.shape[-2:], mode="bilinear", align_corners=False)
    per_item = F.binary_cross_entropy_with_logits(flat_logits, flat_targets, reduction="none").mean(dim=(1, 2, 3))
    weights = valid.reshape(-1).to(per_item.dtype)
    if weights.numel() != per_item.numel():
        raise ValueError(f"valid {tuple(valid.shape)} does not match logits {tuple(lead)}")
    return (per_item * weights).sum() / weights.sum().clamp(min=1.0)


class FrameObjective(nn.Module):
    """BCE-with-logits of the frame mask head against soft pseudo-masks, masked by validity."""

    def forward(self, logits: torch.Tensor, pseudo_masks: torch.Tensor, mask_valid: torch.Tensor) -> torch.Tensor:
        """logits (B, N, 1, h, w), pseudo_masks (B, N, 1, H, W) in [0, 1], mask_valid (B, N) bool -> scalar."""
        return masked_soft_bce(logits, pseudo_masks, mask_valid)
