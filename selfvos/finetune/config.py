"""``FinetuneConfig``: every setting of one supervised fine-tuning run of a head, as typed dataclasses.

    model: the head's config (``type`` = architecture name, e.g. ``stm``) · init: the checkpoint the backbones
    start from (any selfvos checkpoint, or none = scratch) · data: training videos, held-out validation videos,
    clip sampling, augmentation, the pseudo-video stage and the skip curriculum · loss · eval · train (engine).

YAML files in ``recipes/configs/finetune/`` are one config per head x dataset; every value takes a dotted
override on the command line (``--train.max_steps 200 --init runs/mug_davis16_cpu/model``).

The head class decides what its clips carry: for a zero-shot head (``tasks == ("zero-shot",)``) the config sets
``data.clip.binary = True`` and ``data.clip.flow = <head>.needs_flow`` itself (whatever the YAML says), and the
fine-tuning validates it zero-shot (:func:`head_task`; a head running both tasks chooses by its
``training_task(config)`` classmethod, e.g. RVOS by ``mode``, and keeps its instance-id clips).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from selfvos.data.augment import ClipAugmentConfig
from selfvos.data.pseudo_video import PseudoVideoConfig
from selfvos.data.supervised import SupervisedClipConfig
from selfvos.engine.config import TrainConfig
from selfvos.finetune.losses import LossConfig
from selfvos.heads.base import HeadConfig


def head_class(model: HeadConfig) -> Optional[type]:
    """The registered head class of a head config (None when no class is registered under its name)."""
    from selfvos.hub.mixin import architectures

    return architectures().get(HeadConfig.get_choice_name(type(model)))


def head_task(model: HeadConfig) -> str:
    """The task a head config trains and validates for: the class's ``training_task(config)`` when it has one
    (a head running both tasks, e.g. RVOS by its ``mode``), else ``"zero-shot"`` for a head that runs zero-shot
    only (``tasks == ("zero-shot",)``) and ``"one-shot"`` otherwise."""
    cls = head_class(model)
    training_task = getattr(cls, "training_task", None)
    if training_task is not None:
        return str(training_task(model))
    return "zero-shot" if tuple(getattr(cls, "tasks", ())) == ("zero-shot",) else "one-shot"


def head_clip_config(model: HeadConfig, clip: SupervisedClipConfig) -> SupervisedClipConfig:
    """``clip`` with what the head needs: a zero-shot-only head (``tasks == ("zero-shot",)``) gets binary targets
    (``binary=True``) and the flows exactly when it reads them (``flow=<head>.needs_flow``); any other head's clip
    (one-shot heads, and RVOS zero-shot, which trains on instance ids) is returned unchanged."""
    if tuple(getattr(head_class(model), "tasks", ())) != ("zero-shot",):
        return clip
    needs_flow = bool(getattr(head_class(model), "needs_flow", False))
    if clip.binary and clip.flow == needs_flow:
        return clip
    return dataclasses.replace(clip, binary=True, flow=needs_flow)


@dataclass
class CurriculumConfig:
    """Max frame skip growing linearly from ``start`` to ``end`` over the video stage (STM: 0 -> 25)."""

    start: int = 1
    end: int = 25


@dataclass
class FinetuneDataConfig:
    """Training videos (``selfvos.data`` source specs, concatenated in order) and how clips are drawn.

    holdout_every: every N-th video of the concatenation (index % N == N - 1) is held out for validation
        and never trained on (0 = no validation videos).
    pseudo_video_fraction: the first fraction of the steps trains on pseudo-videos made from single annotated
        frames by random affine warps (STM's static-image stage), the rest on real clips.
    """

    sources: List[str] = field(default_factory=lambda: [
        "davis:../shared/data/davis2016-train-240p", "davis:../shared/data/davis2017-multi"])
    holdout_every: int = 6
    clip: SupervisedClipConfig = field(default_factory=SupervisedClipConfig)
    clips_per_video: int = 8
    augment: bool = True
    augment_cfg: ClipAugmentConfig = field(default_factory=lambda: ClipAugmentConfig(mask_resample="nearest"))
    pseudo_video_fraction: float = 0.25
    pseudo_video: PseudoVideoConfig = field(default_factory=PseudoVideoConfig)
    curriculum: Optional[CurriculumConfig] = field(default_factory=CurriculumConfig)

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("data.sources: give at least one training source")
        if self.holdout_every < 0 or self.holdout_every == 1:
            raise ValueError(f"data.holdout_every must be 0 or >= 2, got {self.holdout_every}")
        if not 0.0 <= self.pseudo_video_fraction <= 1.0:
            raise ValueError(f"data.pseudo_video_fraction must be in [0, 1], got {self.pseudo_video_fraction}")


@dataclass
class EvalConfig:
    """Validation on the held-out videos: every ``every`` steps and at the end (0 = only at the end);
    frames processed at ``max_side`` (None: as stored). The best J&F (YouTube-VIS AP for a VIS head) is exported
    to ``<output_dir>/best``."""

    every: int = 200
    max_side: Optional[int] = None
    enabled: bool = True


@dataclass
class FinetuneConfig:
    model: HeadConfig = field(default_factory=lambda: HeadConfig.get_choice_class("stm")())
    init: Optional[str] = None  # checkpoint whose backbone trunk initialises every backbone; None = scratch
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=600, batch_size=4, lr=1e-4, backbone_lr_ratio=0.5, weight_decay=0.01, warmup_steps=30,
        schedule="poly", save_every=100, log_every=10, freeze_bn=True, output_dir="runs/finetune_stm"))

    def __post_init__(self) -> None:
        self.data.clip = head_clip_config(self.model, self.data.clip)

    @property
    def stage_steps(self) -> Tuple[int, int]:
        """(pseudo-video steps, video steps)."""
        first = int(math.floor(self.train.max_steps * self.data.pseudo_video_fraction))
        return first, self.train.max_steps - first
