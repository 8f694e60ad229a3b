"""Online fine-tuning on the annotated frames of one video (OSVOS-style), before it is segmented.

>>> adapted = finetune_on_frames(model, [frame0], [mask0], OnlineFinetuneConfig(steps=10))
>>> masks = Segmenter(adapted, "one-shot").segment_video(video, first_mask=mask0)

``model`` is never modified: a deep copy is trained and returned in eval mode.

Training data: each step draws ``batch`` pseudo-clips. A clip takes one given frame (seeded choice among the
first frame and any corrected frames), resizes it so its short side is ``short_side`` and makes ``num_frames``
views of it by independent random affine warps (:mod:`selfvos.data.pseudo_video`: frames bilinear, masks
nearest with out-of-frame pixels 0) and, with ``jitter``, independent colour jitter. With ``crop`` each view
is a ``crop`` x ``crop`` window of the resized frame centred near a random object pixel (the views keep the
scale inference works at); without, the whole resized frame. View sides are rounded down to multiples of 16.
The batch follows the supervised contract (:mod:`selfvos.data.supervised`):

- ``frames`` float32 (B, T, 3, h, w) in [0, 1];
- ``masks`` int64 (B, T, h, w): 0 background, 1..K the objects of all given masks (renumbered in increasing
  order of their ids), 255 void; an object absent from view 0 is void in the other views of its clip;
- ``object_valid`` bool (B, K): object k + 1 is present in view 0 of the clip;
- ``short_side`` int64 (): the scale of the views (the loss may relate it to the inference scale).

Loss: ``ONLINE_LOSSES[architecture](model, batch, **loss_options) -> scalar``, registered where each method
lives (``"mug"``: differentiable label propagation, :mod:`selfvos.inference.label_free`; ``"stm"``: the head's
training forward with the fine-tuning losses, :mod:`selfvos.heads.stm`). This module imports no method.

Optimisation: Adam at ``lr`` on the parameters whose names (``model.named_parameters()``) start with one of
``parameters``; every other parameter is frozen and the copy stays in eval mode (BatchNorm statistics frozen,
as at inference). A step with a non-finite loss or gradient is skipped; the result is refused
(:class:`~selfvos.errors.NonFiniteWeightsError`) when any weight is not finite. Every random choice of step
``s`` comes from ``SeedSequence([seed, s])``: the same inputs and seed give the same weights.
"""
from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from selfvos.data.pseudo_video import (
    PseudoVideoConfig,
    random_affine,
    resize_matrix,
    warp_pair,
)
from selfvos.data.video import VOID
from selfvos.errors import NonFiniteWeightsError
from selfvos.hub.weights import first_nonfinite
from selfvos.inference.core import architecture_of
from selfvos.registry import ONLINE_LOSSES

log = logging.getLogger(__name__)

STRIDE = 16  # view sides are multiples of this (the coarsest feature stride of the heads)
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 grey of the colour jitter


@dataclass
class OnlineFinetuneConfig:
    """Online fine-tuning settings. Defaults: chosen for the MuG model's label propagation on DAVIS-2016 train
    (``benchmarks/online_davis16.py``; results in ``benchmarks/results/online_davis16.json``).

    steps: optimiser steps (0 returns an unchanged copy).
    lr: Adam learning rate.
    parameters: name prefixes of the parameters that train (``"backbone.layer3"``: the layer MuG's features
        come from, ``"backbone.layer2"`` the one below it; ``""`` trains everything).
    batch: pseudo-clips per step.
    num_frames: views per clip (view 0 is the reference the others are segmented from).
    short_side: the given frames are resized so their short side is this before warping.
    crop: side of the square view window at that scale (None: the whole resized frame).
    affine: ranges of the random affine warp of every view.
    jitter: strength s of an independent colour jitter of every view (brightness, saturation and contrast
        factors uniform in [1 - s, 1 + s]; 0: none).
    seed: base seed of every random choice.
    loss_options: keyword arguments of the architecture's registered loss (MuG: ``{"one_shot": OneShotConfig}``
        whose temperature, top-k and window the loss uses; STM: ``{"loss": LossConfig}``).
    """

    steps: int = 10
    lr: float = 3e-4
    parameters: tuple[str, ...] = ("backbone.layer2", "backbone.layer3")
    batch: int = 2
    num_frames: int = 2
    short_side: int = 480
    crop: int | None = 256
    affine: PseudoVideoConfig = field(default_factory=PseudoVideoConfig)
    jitter: float = 0.0
    seed: int = 0
    loss_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.parameters = (self.parameters,) if isinstance(self.parameters, str) else tuple(self.parameters)
        if self.steps < 0 or self.lr <= 0 or self.batch < 1 or self.num_frames < 2:
            raise ValueError(f"need steps >= 0, lr > 0, batch >= 1, num_frames >= 2, got {self}")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")
        if self.short_side < STRIDE or (self.crop is not None and self.crop < STRIDE):
            raise ValueError(f"short_side and crop must be at least {STRIDE}, got {self.short_side}, {self.crop}")
        if not self.parameters:
            raise ValueError("parameters: give at least one name prefix ('' trains every parameter)")


class OnlineResult(NamedTuple):
    """What :func:`run_online_finetune` made: the fine-tuned copy (eval mode), the training loss of every step
    (``nan`` where the step was skipped), the number of skipped steps and the wall time in seconds."""

    model: nn.Module
    losses: list[float]
    skipped: int
    seconds: float


def object_table(masks: Sequence[np.ndarray]) -> np.ndarray:
    """(256,) int64 look-up table: the ids (not 0 / 255) of all ``masks`` -> 1..K in increasing order,
    0 -> 0, 255 -> 255, any other value -> 0."""
    ids = sorted({int(i) for m in masks for i in np.unique(m)} - {0, VOID})
    table = np.zeros(VOID + 1, dtype=np.int64)
    table[ids] = np.arange(1, len(ids) + 1)
    table[VOID] = VOID
    return table


def check_inputs(frames: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> None:
    """Raise ``ValueError`` unless frames are (H, W, 3) uint8, masks (H, W) uint8 of the same sizes, one per
    frame, with at least one object id (not 0 / 255) among them."""
    if not len(frames) or len(frames) != len(masks):
        raise ValueError(f"need one mask per frame and at least one frame, got {len(frames)} frames, "
                         f"{len(masks)} masks")
    for i, (frame, mask) in enumerate(zip(frames, masks)):
        frame, mask = np.asarray(frame), np.asarray(mask)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame {i} must be a uint8 (H, W, 3) array, got {frame.dtype} {frame.shape}")
        if mask.shape != frame.shape[:2] or mask.dtype != np.uint8:
            raise ValueError(f"mask {i} must be uint8 {frame.shape[:2]} like its frame, got {mask.dtype} {mask.shape}")
    if object_table(masks)[1:VOID].max() == 0:
        raise ValueError("the masks hold no object (only background 0 / void 255): nothing to fine-tune on")


def view_geometry(size: tuple[int, int], cfg: OnlineFinetuneConfig) -> tuple[np.ndarray, tuple[int, int],
                                                                           tuple[int, int]]:
    """For an (H0, W0) = ``size`` frame: the (3, 3) map of its pixels onto the resized frame (short side
    ``cfg.short_side``), the resized frame's (H, W) and the (h, w) view size (the resized frame or the crop,
    rounded down to multiples of 16)."""
    scale = cfg.short_side / min(size)
    work = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
    view = work if cfg.crop is None else (min(cfg.crop, work[0]), min(cfg.crop, work[1]))
    view = (max(STRIDE, view[0] // STRIDE * STRIDE), max(STRIDE, view[1] // STRIDE * STRIDE))
    return resize_matrix(size, work), work, view


def crop_shift(mask: np.ndarray, to_work: np.ndarray, view: tuple[int, int], work: tuple[int, int],
               rng: np.random.Generator) -> np.ndarray:
    """(3, 3) translation moving a ``view``-sized window of the resized frame to the origin: the window is
    centred on a random object pixel of ``mask`` (H0, W0) (anywhere when it has none), jittered by up to a
    quarter of its side, and kept inside the resized frame of size ``work``."""
    ys, xs = np.nonzero((mask != 0) & (mask != VOID))
    if len(ys):
        k = rng.integers(len(ys))
        cx, cy = to_work[:2] @ np.array([xs[k], ys[k], 1.0])
    else:
        cx, cy = rng.uniform(0, work[1]), rng.uniform(0, work[0])
    cx += rng.uniform(-0.25, 0.25) * view[1]
    cy += rng.uniform(-0.25, 0.25) * view[0]
    x0 = float(np.clip(cx - view[1] / 2, 0, max(0, work[1] - view[1])))
    y0 = float(np.clip(cy - view[0] / 2, 0, max(0, work[0] - view[0])))
    return np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])


def colour_jitter(frame: torch.Tensor, strength: float, rng: np.random.Generator) -> torch.Tensor:
    """frame (3, H, W) in [0, 1] with brightness, saturation (about the ITU-R 601 grey) and contrast (about
    the mean) factors drawn uniform in [1 - strength, 1 + strength], clipped to [0, 1]."""
    brightness, saturation, contrast = rng.uniform(1.0 - strength, 1.0 + strength, size=3)
    x = frame * float(brightness)
    grey = (x * torch.tensor(LUMA).view(3, 1, 1)).sum(0, keepdim=True)
    x = grey + (x - grey) * float(saturation)
    x = x.mean() + (x - x.mean()) * float(contrast)
    return x.clamp(0.0, 1.0)


def pseudo_clip(frame: np.ndarray, mask: np.ndarray, cfg: OnlineFinetuneConfig,
                rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One clip of ``cfg.num_frames`` warped (and, with ``cfg.jitter``, colour-jittered) views of frame
    (H0, W0, 3) uint8 and its ids (H0, W0) uint8 -> frames float32 (T, 3, h, w) in [0, 1], masks int64
    (T, h, w) ids as given (outside the frame 0)."""
    to_work, work, view = view_geometry(frame.shape[:2], cfg)
    base = to_work if cfg.crop is None else crop_shift(mask, to_work, view, work, rng) @ to_work
    views = [warp_pair(frame, mask, random_affine(rng, cfg.affine, view) @ base, view, cfg.affine.border)
             for _ in range(cfg.num_frames)]
    frames = [colour_jitter(f, cfg.jitter, rng) if cfg.jitter else f for f, _ in views]
    return torch.stack(frames), torch.stack([m for _, m in views])


def clip_batch(frames: Sequence[np.ndarray], masks: Sequence[np.ndarray], cfg: OnlineFinetuneConfig,
               rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """``cfg.batch`` pseudo-clips of the given frames (each of a seeded random one) in the batch contract of
    the module docstring: frames (B, T, 3, h, w), masks (B, T, h, w), object_valid (B, K), short_side ()."""
    table = torch.from_numpy(object_table(masks))
    num_objects = int(table[1:VOID].max())
    clips, ids, valid = [], [], []
    for _ in range(cfg.batch):
        index = int(rng.integers(len(frames)))
        clip, clip_ids = pseudo_clip(np.asarray(frames[index]), np.asarray(masks[index]), cfg, rng)
        clip_ids = table[clip_ids]
        present = torch.zeros(num_objects + 1, dtype=torch.bool)
        present[clip_ids[0][clip_ids[0] != VOID].unique()] = True
        absent = ~present[clip_ids.clamp(max=num_objects)] & (clip_ids != VOID) & (clip_ids != 0)
        clips.append(clip)
        ids.append(torch.where(absent, torch.tensor(VOID), clip_ids))
        valid.append(present[1:])
    return {"frames": torch.stack(clips), "masks": torch.stack(ids), "object_valid": torch.stack(valid),
            "short_side": torch.tensor(cfg.short_side)}


def loss_function(model: nn.Module) -> Callable[..., torch.Tensor]:
    """The online loss registered for ``model``'s architecture; ``ValueError`` naming the architecture and
    the supported ones when there is none."""
    name = architecture_of(model)
    if name not in ONLINE_LOSSES:
        raise ValueError(f"online fine-tuning has no loss for architecture {name!r}; supported: "
                         f"{', '.join(ONLINE_LOSSES.names()) or '(none)'}")
    return ONLINE_LOSSES.get(name)


def online_loss(model: nn.Module, batch: Mapping[str, torch.Tensor],
                options: Mapping[str, Any] | None = None) -> torch.Tensor:
    """The registered online loss of ``model``'s architecture on ``batch`` (moved to the model's device)."""
    device = next(model.parameters()).device
    batch = {key: value.to(device) for key, value in batch.items()}
    return loss_function(model)(model, batch, **dict(options or {}))


def trainable(model: nn.Module, prefixes: Sequence[str]) -> list[nn.Parameter]:
    """Parameters of ``model`` whose names start with one of ``prefixes``; ``ValueError`` when none does."""
    chosen = [p for name, p in model.named_parameters() if any(name.startswith(prefix) for prefix in prefixes)]
    if not chosen:
        tops = sorted({name.split(".")[0] for name, _ in model.named_parameters()})
        raise ValueError(f"no parameter name starts with {list(prefixes)}; the model's modules: {tops}")
    return chosen


def _finite_step(optimizer: torch.optim.Optimizer, params: list[nn.Parameter], loss: torch.Tensor) -> bool:
    """One update from ``loss``; False (nothing changed) when the loss or the gradient norm is not finite."""
    optimizer.zero_grad(set_to_none=True)
    if not torch.isfinite(loss):
        return False
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(params, float("inf"))
    if not torch.isfinite(norm):
        return False
    optimizer.step()
    return True


def run_online_finetune(model: nn.Module, frames: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                        cfg: OnlineFinetuneConfig | None = None) -> OnlineResult:
    """Fine-tune a copy of ``model`` on pseudo-clips of ``frames`` (H, W, 3) uint8 with ``masks`` (H, W)
    uint8 ids; see the module docstring. Works inside ``torch.no_grad`` / ``inference_mode`` too."""
    cfg = cfg or OnlineFinetuneConfig()
    check_inputs(frames, masks)
    loss_function(model)  # an unsupported architecture fails before any work
    start = time.perf_counter()
    with torch.inference_mode(False), torch.enable_grad():
        tuned = copy.deepcopy(model).eval()
        flags = {name: p.requires_grad for name, p in tuned.named_parameters()}
        params = trainable(tuned, cfg.parameters)
        tuned.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        optimizer = torch.optim.Adam(params, lr=cfg.lr)
        losses, skipped = [], 0
        for step in range(cfg.steps):
            rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, step]))
            loss = online_loss(tuned, clip_batch(frames, masks, cfg, rng), cfg.loss_options)
            ok = _finite_step(optimizer, params, loss)
            skipped += not ok
            losses.append(float(loss.detach()) if ok else float("nan"))
        for name, p in tuned.named_parameters():
            p.grad = None
            p.requires_grad_(flags[name])
    if skipped:
        log.warning("online fine-tuning skipped %d of %d steps (non-finite loss or gradient)", skipped, cfg.steps)
    bad = first_nonfinite(tuned.state_dict().items())
    if bad is not None:
        raise NonFiniteWeightsError("online fine-tuning", f"non-finite weights after {cfg.steps} steps: {bad}",
                                    tensor=bad.name)
    return OnlineResult(tuned.eval(), losses, skipped, time.perf_counter() - start)


def finetune_on_frames(model: nn.Module, frames: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                       cfg: OnlineFinetuneConfig | None = None) -> nn.Module:
    """A copy of ``model`` fine-tuned on this video's given frames (first frame + corrected frames) and their
    id masks, in eval mode; ``model`` itself is unchanged. See :func:`run_online_finetune`."""
    return run_online_finetune(model, frames, masks, cfg).model


__all__ = ["OnlineFinetuneConfig", "OnlineResult", "clip_batch", "finetune_on_frames", "loss_function", "online_loss",
           "pseudo_clip", "run_online_finetune"]
