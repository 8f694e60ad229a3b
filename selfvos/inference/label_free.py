"""Inference cores of the pretrained MuG model (no supervised head): label propagation and zero-shot, and its
online fine-tuning loss.

Registered for architecture ``"mug"``: one-shot runs :class:`~selfvos.inference.one_shot.OneShotPropagator`
on the model's features (``options["one_shot"]``, a ``OneShotConfig``), zero-shot runs
:class:`~selfvos.inference.zero_shot.ZeroShotSegmenter` (``options["zero_shot"]``, a ``ZeroShotConfig``).
The online loss (``ONLINE_LOSSES["mug"]``, :mod:`selfvos.inference.online`) is label propagation made
differentiable: the first view of a pseudo-clip propagates its mask to the other views with the propagator's
temperature, top-k and window, and the cross-entropy against their masks trains the features propagation reads.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F

from selfvos.data.video import VOID
from selfvos.registry import CORES, ONLINE_LOSSES


def one_shot_core(model: Any, config: Optional[Any] = None) -> Any:
    """Label propagation of the first mask on the model's features."""
    from selfvos.inference.one_shot import OneShotConfig, OneShotPropagator

    return OneShotPropagator(model, config or OneShotConfig())


def zero_shot_core(model: Any, config: Optional[Any] = None) -> Any:
    """Frame head + co-attention references + motion cue + GrabCut."""
    from selfvos.inference.zero_shot import ZeroShotConfig, ZeroShotSegmenter

    return ZeroShotSegmenter(model, config or ZeroShotConfig())


@CORES.register("mug")
def mug_core(model: Any, task: str, options: Mapping[str, Any]) -> Any:
    """One-shot label propagation or the zero-shot pipeline on a pretrained MuG model."""
    if task == "one-shot":
        return one_shot_core(model, options.get("one_shot"))
    return zero_shot_core(model, options.get("zero_shot"))


def window_mask(height: int, width: int, radius: int, window: str = "square",
                device: torch.device | None = None) -> torch.Tensor:
    """(h*w, h*w) bool, row = query cell, column = reference cell (row-major): True inside the query's window
    (``"square"``: ``|dy|, |dx| <= radius``; ``"disk"``: ``dy^2 + dx^2 <= radius^2``), as the propagator's."""
    yy, xx = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    dy = yy.reshape(-1, 1) - yy.reshape(1, -1)
    dx = xx.reshape(-1, 1) - xx.reshape(1, -1)
    if window == "square":
        return (dy.abs() <= radius) & (dx.abs() <= radius)
    return dy * dy + dx * dx <= radius * radius


def propagation_loss(reference: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, target: torch.Tensor,
                     temperature: float, topk: int, radius: int | None = None, window: str = "square",
                     eps: float = 1e-6) -> torch.Tensor:
    """Cross-entropy of label propagation from reference views to query views (differentiable in the features).

    reference, query: (B, C, h, w) unit-norm features; labels: (B, L, h, w) soft labels of the reference cells;
    target: (B, H, W) int64 ids 0..L-1 of the query views, 255 ignored. For query cell p and the reference cells
    m inside its window (``radius`` None: all cells), ``a_pm = <q_p, k_m>``; the top-``topk`` a_pm are kept,
    ``w = softmax(a / temperature)`` and ``P_p = sum_m w_pm labels_m`` (L,); P (B, L, h, w) is upsampled
    bilinearly to (H, W) and the loss is the mean over valid pixels of ``-log max(P_target, eps)`` (0 when no
    pixel is valid).
    """
    b, _, h, w = query.shape
    affinity = torch.einsum("bcq,bck->bqk", query.flatten(2), reference.flatten(2))  # (B, hw query, hw ref)
    if radius is not None:
        affinity = affinity.masked_fill(~window_mask(h, w, radius, window, affinity.device), float("-inf"))
    values, indices = affinity.topk(min(topk, h * w), dim=-1)  # (B, hw, k)
    weights = torch.softmax(values / temperature, dim=-1)
    gathered = torch.stack([lab[:, idx] for lab, idx in zip(labels.flatten(2), indices)])  # (B, L, hw, k)
    probs = (gathered * weights.unsqueeze(1)).sum(-1).reshape(b, -1, h, w)
    probs = F.interpolate(probs, size=tuple(target.shape[-2:]), mode="bilinear", align_corners=False)
    if not (target != VOID).any():
        return probs.sum() * 0.0
    return F.nll_loss(probs.clamp_min(eps).log(), target, ignore_index=VOID)


@ONLINE_LOSSES.register("mug")
def mug_online_loss(model: Any, batch: Mapping[str, torch.Tensor], one_shot: Any = None) -> torch.Tensor:
    """Online fine-tuning loss of a MuG model: :func:`propagation_loss` from view 0 of every clip to its views
    1..T-1 on ``normalize(model.encode(views))``, with the temperature, top-k and window of ``one_shot``
    (default ``OneShotConfig()``); the window radius is scaled from the propagator's working short side to the
    views' ``batch["short_side"]``.

    batch (:mod:`selfvos.inference.online`): frames (B, T, 3, H, W), masks (B, T, H, W) ids 0..K / 255,
    object_valid (B, K), short_side (). View 0's mask becomes K+1 one-hot channels (void as background, as the
    propagator treats a given mask), area-averaged to the feature grid.
    """
    from selfvos.inference.one_shot import OneShotConfig

    cfg = one_shot or OneShotConfig()
    frames, masks = batch["frames"], batch["masks"]
    b, t = frames.shape[:2]
    channels = batch["object_valid"].shape[1] + 1
    features = F.normalize(model.encode(frames).float(), dim=2)  # (B, T, C, h, w)
    first = masks[:, 0]
    one_hot = F.one_hot(torch.where(first == VOID, torch.zeros_like(first), first), channels)
    labels = F.interpolate(one_hot.permute(0, 3, 1, 2).float(), size=tuple(features.shape[-2:]), mode="area")
    radius = cfg.radius
    if cfg.short_side:
        radius = max(1, round(cfg.radius * float(batch["short_side"]) / cfg.short_side))

    def per_target(x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1).expand(b, t - 1, *x.shape[1:]).flatten(0, 1)

    return propagation_loss(per_target(features[:, 0]), per_target(labels), features[:, 1:].flatten(0, 1),
                            masks[:, 1:].flatten(0, 1), cfg.temperature, cfg.topk, radius, cfg.window)
