"""Parameter groups, AdamW and the warm-up + decay learning-rate schedule.

Groups (timm convention): parameters with ``ndim <= 1`` (biases, norm scales/shifts) get no weight decay;
parameters under a module called ``backbone`` train at ``lr * backbone_lr_ratio``.

Schedule, as a factor on each group's base lr after ``s`` optimizer updates (``W`` warm-up steps,
``N`` total steps, ``m`` = ``min_lr_ratio``)::

    s <  W : (s + 1) / W                        (linear warm-up; the first update already moves)
    s >= W : p = min(1, (s - W) / max(1, N - W))
             cosine:   m + (1 - m) * (1 + cos(pi * p)) / 2
             linear:   m + (1 - m) * (1 - p)
             constant: 1
"""
from __future__ import annotations

import math
from typing import Dict, List

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from selfvos.engine.config import SCHEDULES, TrainConfig


def is_backbone_parameter(name: str, backbone_key: str = "backbone") -> bool:
    """``"model.backbone.layer1.0.conv1.weight"`` -> True: some module on the path is named ``backbone_key``."""
    return backbone_key in name.split(".")[:-1]


def parameter_groups(
    module: nn.Module, lr: float, weight_decay: float, backbone_lr_ratio: float = 1.0, backbone_key: str = "backbone"
) -> List[Dict]:
    """Split trainable parameters into up to four AdamW groups: {backbone, rest} x {decay, no decay}.

    Each group is a dict with ``params``, ``lr``, ``weight_decay`` and a ``name`` (for logging);
    empty groups are left out. Frozen parameters (``requires_grad=False``) are skipped.
    """
    buckets: Dict[str, List[nn.Parameter]] = {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        part = "backbone" if is_backbone_parameter(name, backbone_key) else "head"
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


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, schedule: str, min_lr_ratio: float) -> float:
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
    return min_lr_ratio + (1.0 - min_lr_ratio) * (1.0 - progress)


def build_optimizer(module: nn.Module, cfg: TrainConfig, backbone_key: str = "backbone") -> torch.optim.AdamW:
    """AdamW over :func:`parameter_groups` of ``module``."""
    groups = parameter_groups(module, cfg.lr, cfg.weight_decay, cfg.backbone_lr_ratio, backbone_key)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> LambdaLR:
    """``LambdaLR`` applying :func:`lr_factor`; call ``step()`` once per optimizer update."""

    def factor(step: int) -> float:
        return lr_factor(
            step,
            total_steps=cfg.max_steps,
            warmup_steps=cfg.warmup_steps,
            schedule=cfg.schedule,
            min_lr_ratio=cfg.min_lr_ratio,
        )

    return LambdaLR(optimizer, factor)
