"""Supervised segmentation losses of the heads, as plain functions and one weighted-sum objective.

Logits are (N, K+1, H, W) over background + K objects, targets (N, H, W) int64 ids with 255 = void
(ignored everywhere). Formulas, with ``l_i`` the per-pixel cross-entropy of valid pixel i:

- cross-entropy: ``mean_i l_i``;
- bootstrapped cross-entropy (FEELVOS 15%, MUNet 40%): per image, the mean of the ``ceil(fraction * n)``
  largest ``l_i`` of its n valid pixels, averaged over images; with ``bootstrap_warmup`` W the fraction starts
  at 1 and reaches ``bootstrap`` at step W, ``fraction = 1 - min(1, step / W) (1 - bootstrap)`` (the
  ``hard_example_mining_step`` of the DeepLab loss FEELVOS and CFBI train with: from the start, the hardest
  pixels of an untrained head are best served by the uniform prediction, ln 2 for two classes);
- class-balanced cross-entropy (COSNet's weighted binary cross-entropy, OSVOS's ``class_balanced_cross_entropy_loss``):
  per image, pixel i of class y_i weighs ``1 - f_{y_i}`` with ``f_c`` the fraction of the image's valid pixels
  that are class c, ``sum_i (1 - f_{y_i}) l_i / n``; for two classes, foreground pixels weigh the background
  fraction and background pixels the foreground fraction, so a head cannot settle on "all background";
- soft IoU loss (MUNet): per image and object k present in the batch (``object_valid``),
  ``1 - sum_i p_ik y_ik / sum_i (p_ik + y_ik - p_ik y_ik)`` over valid pixels, averaged over objects.

:class:`SegmentationLoss` is the trainer's objective: it runs the head on the batch and combines the terms
on the frames the head predicted (``out["frames"]``), plus the head's own ``extra_loss`` when it returns one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

VOID = 255


@dataclass
class LossConfig:
    """Weights of the terms; ``bootstrap`` = fraction of hardest pixels for the cross-entropy (None: all),
    reached linearly from 1 over the first ``bootstrap_warmup`` training steps (0: from the start);
    ``class_balanced``: the cross-entropy weighs each pixel by one minus its class's frequency in the image."""

    ce: float = 1.0
    bootstrap: Optional[float] = None
    soft_iou: float = 0.0
    bootstrap_warmup: int = 0
    class_balanced: bool = False

    def __post_init__(self) -> None:
        if self.bootstrap is not None and not 0.0 < self.bootstrap <= 1.0:
            raise ValueError(f"loss.bootstrap must be in (0, 1] or None, got {self.bootstrap}")
        if self.bootstrap_warmup < 0:
            raise ValueError(f"loss.bootstrap_warmup must be >= 0, got {self.bootstrap_warmup}")
        if self.ce < 0 or self.soft_iou < 0 or self.ce + self.soft_iou == 0:
            raise ValueError(f"loss weights must be >= 0 and not all 0, got ce={self.ce}, soft_iou={self.soft_iou}")
        if self.class_balanced and self.bootstrap is not None:
            raise ValueError("loss.class_balanced and loss.bootstrap are two ways of weighting pixels: choose one")


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over valid (non-void) pixels; 0 when there are none."""
    if not (target != VOID).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), target, ignore_index=VOID)


def class_balanced_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per image ``sum_i (1 - f_{y_i}) l_i / n`` over its n valid pixels (``f_c``: fraction of class c among
    them), averaged over images with valid pixels; 0 when there are none."""
    pixel = F.cross_entropy(logits.float(), target, ignore_index=VOID, reduction="none").flatten(1)  # (N, HW)
    labels = target.flatten(1)
    valid = labels != VOID
    n = valid.sum(1)  # (N,)
    if not bool((n > 0).any()):
        return logits.sum() * 0.0
    classes = logits.shape[1]
    counts = F.one_hot(labels.where(valid, 0), classes).mul(valid[..., None]).sum(1)  # (N, C)
    frequency = counts / n.clamp(min=1)[:, None]
    weight = (1.0 - frequency).gather(1, labels.where(valid, 0)) * valid  # (N, HW)
    per_image = (weight * pixel).sum(1) / n.clamp(min=1)
    return per_image[n > 0].mean()


def bootstrapped_cross_entropy(logits: torch.Tensor, target: torch.Tensor, fraction: float) -> torch.Tensor:
    """Per image the mean over the hardest ``fraction`` of its valid pixels, then the mean over images."""
    pixel = F.cross_entropy(logits.float(), target, ignore_index=VOID, reduction="none").flatten(1)  # (N, HW)
    valid = (target != VOID).flatten(1)
    losses = []
    for loss, keep in zip(pixel, valid):
        n = int(keep.sum())
        if n:
            losses.append(torch.topk(loss[keep], max(1, math.ceil(fraction * n))).values.mean())
    return torch.stack(losses).mean() if losses else logits.sum() * 0.0


def soft_iou_loss(logits: torch.Tensor, target: torch.Tensor, object_valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``1 - soft IoU`` of each object's probability map with its mask over valid pixels, mean over objects.

    object_valid: (N, K) bool, which object channels are real (padding excluded); default all K.
    """
    n, channels = logits.shape[:2]
    k = channels - 1
    probs = torch.softmax(logits.float(), dim=1)[:, 1:]  # (N, K, H, W)
    valid = (target != VOID).unsqueeze(1).float()
    ids = torch.arange(1, k + 1, device=target.device).view(1, k, 1, 1)
    truth = (target.unsqueeze(1) == ids).float()
    inter = (probs * truth * valid).flatten(2).sum(-1)
    union = ((probs + truth - probs * truth) * valid).flatten(2).sum(-1)
    iou = inter / union.clamp(min=1e-6)  # (N, K)
    keep = torch.ones(n, k, dtype=torch.bool, device=logits.device) if object_valid is None else object_valid.bool()
    return (1.0 - iou)[keep].mean() if keep.any() else logits.sum() * 0.0


class SegmentationLoss(nn.Module):
    """``objective(model, batch) -> {"loss", "ce", "soft_iou"}``: the head's logits against ``batch["masks"]``.

    Also a trainer callback (``on_train_start`` / ``on_step_end``) that follows the training step, which the
    bootstrap warm-up reads (a resumed run continues the schedule)."""

    def __init__(self, config: Optional[LossConfig] = None) -> None:
        super().__init__()
        self.config = config or LossConfig()
        self.step = 0

    def on_train_start(self, trainer: Any) -> None:
        self.step = int(trainer.state.step)

    def on_step_end(self, trainer: Any, metrics: Mapping[str, float]) -> None:
        self.step = int(trainer.state.step)

    def on_round_end(self, trainer: Any, round_index: int) -> None:
        pass

    @property
    def bootstrap_fraction(self) -> Optional[float]:
        """The hardest-pixel fraction at the current step (None: plain cross-entropy)."""
        cfg = self.config
        if cfg.bootstrap is None or not cfg.bootstrap_warmup:
            return cfg.bootstrap
        return 1.0 - min(1.0, self.step / cfg.bootstrap_warmup) * (1.0 - cfg.bootstrap)

    def terms(self, logits: torch.Tensor, target: torch.Tensor,
              object_valid: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """logits (B, T', K+1, H, W), target (B, T', H, W), object_valid (B, K) -> the weighted terms."""
        cfg = self.config
        b, t = logits.shape[:2]
        flat_logits, flat_target = logits.flatten(0, 1), target.flatten(0, 1)
        out: Dict[str, torch.Tensor] = {}
        if cfg.ce:
            fraction = self.bootstrap_fraction
            if cfg.class_balanced:
                out["ce"] = class_balanced_cross_entropy(flat_logits, flat_target)
            elif fraction is None:
                out["ce"] = cross_entropy(flat_logits, flat_target)
            else:
                out["ce"] = bootstrapped_cross_entropy(flat_logits, flat_target, fraction)
        if cfg.soft_iou:
            valid = None if object_valid is None else object_valid.repeat_interleave(t, dim=0)
            out["soft_iou"] = soft_iou_loss(flat_logits, flat_target, valid)
        out["loss"] = cfg.ce * out.get("ce", 0.0) + cfg.soft_iou * out.get("soft_iou", 0.0)
        return out

    def forward(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """A head's auxiliary prediction (``out["aux_logits"]``, same shape as the logits, e.g. A-GAME's coarse
        mask) adds ``out["aux_weight"]`` (default 1) times the same terms, reported as ``"aux"``; a head's own
        loss term (``out["extra_loss"]``, a scalar tensor already weighted, e.g. RVOS's stop score) is added as it
        is and reported as ``"extra"``."""
        out = model(batch)
        target = batch["masks"][:, out["frames"]]
        terms = self.terms(out["logits"], target, batch.get("object_valid"))
        if "aux_logits" in out:
            terms["aux"] = self.terms(out["aux_logits"], target, batch.get("object_valid"))["loss"]
            terms["loss"] = terms["loss"] + float(out.get("aux_weight", 1.0)) * terms["aux"]
        if "extra_loss" in out:
            terms["extra"] = out["extra_loss"]
            terms["loss"] = terms["loss"] + terms["extra"]
        return terms
