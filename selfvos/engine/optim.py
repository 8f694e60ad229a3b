"""Parameter groups, AdamW or SGD, and the warm-up + decay learning-rate schedule.

Groups (timm convention): parameters with ``ndim <= 1`` (biases, norm scales/shifts) get no weight decay;
parameters under a module named in ``backbone_keys`` (default: any module called ``backbone``, so both
``backbone`` and ``memory_encoder.backbone``) train at ``lr * backbone_lr_ratio``.

Schedule, as a factor on each group's base lr after ``s`` optimizer updates (``W`` warm-up steps,
``N`` total steps, ``m`` = ``min_lr_ratio``)::

    s <  W : (s + 1) / W                        (linear warm-up; the first update already moves)
    s >= W : p = min(1, (s - W) / max(1, N - W))
             cosine:   m + (1 - m) * (1 + cos(pi * p)) / 2
             linear:   m + (1 - m) * (1 - p)
             poly:     m + (1 - m) * (1 - p) ** poly_power
             constant: 1
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence, Union

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from selfvos.engine.config import OPTIMIZERS, SCHEDULES, TrainConfig


def is_backbone_parameter(name: str, backbone_keys: Union[str, Sequence[str]] = ("backbone",)) -> bool:
    """True when a module on the parameter's path matches one of ``backbone_keys``.

    A key is a module name (``"backbone"`` matches ``model.backbone.conv1.weight`` and
    ``model.memory_encoder.backbone.conv1.weight``) or a dotted run of names (``"memory_encoder.backbone"``
    matches only the second). Names match whole path components: ``backbone_proj`` is not ``backbone``.
    """
    keys = (backbone_keys,) if isinstance(backbone_keys, str) else backbone_keys
    modules = name.split(".")[:-1]
    for key in keys:
        parts = key.split(".")
        if any(modules[i : i + len(parts)] == parts for i in range(len(modules) - len(parts) + 1)):
            return True
    return False


def parameter_groups(
    module: nn.Module,
    lr: float,
    weight_decay: float,
    backbone_lr_ratio: float = 1.0,
    backbone_keys: Union[str, Sequence[str]] = ("backbone",),
) -> List[Dict]:
    """Split trainable parameters into up to four optimizer groups: {backbone, rest} x {decay, no decay}.

    Each group is a dict with ``params``, ``lr``, ``weight_decay`` and a ``name`` (for logging);
    empty groups are left out. Frozen parameters (``requires_grad=False``) are skipped.
    """
    buckets: Dict[str, List[nn.Parameter]] = {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        part = "backbone" if is_backbone_parameter(name, backbone_keys) else "head"
        decay = "no_decay" if param.ndim <= 1 else "decay"
        buckets.setdefault(f"{part}/{decay}", []).append(param)
    groups = []
    for key in ("backbone/decay", "backbone/no_decay", "head/decay", "head/no_decay"):
        if key not in buckets:
            continue
        part, decay = key.split("/")
        groups.append(
            {
                "name": key,
                "params": buckets[key],
                "lr": lr * (backbone_lr_ratio if part == "backbone" else 1.0),
                "weight_decay": weight_decay if decay == "decay" else 0.0,
            }
        )
    if not groups:
        raise ValueError(f"{type(module).__name__} has no trainable parameters")
    return groups


def lr_factor(
    step: int, *, total_steps: int, warmup_steps: int, schedule: str, min_lr_ratio: float, poly_power: float = 0.9
) -> float:
    """Multiplier on the base lr for optimizer update number ``step`` (0-based); see the module docstring."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "cosine":
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "poly":
        return min_lr_ratio + (1.0 - min_lr_ratio) * (1.0 - progress) ** poly_power
    return min_lr_ratio + (1.0 - min_lr_ratio) * (1.0 - progress)


def build_optimizer(module: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """``cfg.optimizer`` (AdamW with ``cfg.betas`` or SGD with ``cfg.momentum``) over :func:`parameter_groups`."""
    groups = parameter_groups(module, cfg.lr, cfg.weight_decay, cfg.backbone_lr_ratio, cfg.backbone_keys)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=False, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    raise ValueError(f"train.optimizer must be one of {OPTIMIZERS}, got {cfg.optimizer!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> LambdaLR:
    """``LambdaLR`` applying :func:`lr_factor`; call ``step()`` once per optimizer update."""

    def factor(step: int) -> float:
        return lr_factor(
            step,
            total_steps=cfg.max_steps,
            warmup_steps=cfg.warmup_steps,
            schedule=cfg.schedule,
            min_lr_ratio=cfg.min_lr_ratio,
            poly_power=cfg.poly_power,
        )

    return LambdaLR(optimizer, factor)
