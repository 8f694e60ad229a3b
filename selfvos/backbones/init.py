"""Initialise the backbones of any model from any selfvos checkpoint, matched by key prefix.

``init_backbones(model, source)`` copies into every backbone of ``model`` (``model.backbones()``: dotted path ->
ResNet trunk, e.g. STM's ``backbone`` and ``memory_encoder.backbone``) the trunk found in ``source``:

- an exported checkpoint folder (``config.json`` + ``model.safetensors``: a MuG model, a head, a backbone);
- a resumable training checkpoint folder (``model.safetensors`` whose keys start with ``model.``);
- a ``.safetensors`` file (torchvision / timm ResNet names, or any of the above).

The source trunk is the first prefix among ``backbone.``, ``model.backbone.``, ``module.backbone.`` and ``""``
under which ``conv1.weight`` exists. Every tensor of the target trunk whose name exists under that prefix
with the same shape is copied; the :class:`InitReport` lists what was loaded and what was not (shape
mismatch, absent), so a user sees exactly what the pretrained weights cover.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Union

import torch
from torch import nn

from selfvos.backbones.weights import read_state_dict
from selfvos.errors import NonFiniteWeightsError, SelfvosInputError
from selfvos.hub.weights import first_nonfinite

SOURCE_PREFIXES = ("backbone.", "model.backbone.", "module.backbone.", "")
WEIGHTS = "model.safetensors"


@dataclass
class InitReport:
    """What ``init_backbones`` did: per target backbone the loaded, mismatched and absent tensor names."""

    source: str
    source_prefix: str
    loaded: Dict[str, List[str]] = field(default_factory=dict)
    mismatched: Dict[str, List[str]] = field(default_factory=dict)
    absent: Dict[str, List[str]] = field(default_factory=dict)

    @property
    def num_loaded(self) -> int:
        return sum(len(v) for v in self.loaded.values())

    def summary(self) -> str:
        """One line per target backbone: ``backbone: 122 tensors loaded, 0 mismatched, 0 absent``."""
        lines = [f"initialised from {self.source} (source prefix {self.source_prefix!r}):"]
        for target in self.loaded:
            line = (f"  {target}: {len(self.loaded[target])} tensors loaded, {len(self.mismatched[target])} "
                    f"shape mismatch, {len(self.absent[target])} absent in the source")
            shown = self.mismatched[target][:3] + self.absent[target][:3]
            lines.append(line + (f" (e.g. {', '.join(shown)})" if shown else ""))
        return "\n".join(lines)


def checkpoint_weights(source: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """The tensors of a checkpoint folder (exported or resumable) or a ``.safetensors`` file."""
    path = Path(os.fspath(source)).expanduser()
    if path.is_dir():
        path = path / WEIGHTS
        if not path.is_file():
            raise SelfvosInputError(source, f"not a selfvos checkpoint folder (no {WEIGHTS})")
    elif not path.is_file():
        raise SelfvosInputError(source, "no such checkpoint folder or .safetensors file")
    state = read_state_dict(path)
    bad = first_nonfinite(state.items())
    if bad is not None:  # never start a fine-tuning run from a diverged checkpoint
        raise NonFiniteWeightsError(path, f"non-finite weights: {bad}", tensor=bad.name)
    return state


def find_trunk_prefix(state: Dict[str, torch.Tensor], where: str = "checkpoint") -> str:
    """The first of :data:`SOURCE_PREFIXES` under which a ResNet trunk (``conv1.weight``) is stored."""
    for prefix in SOURCE_PREFIXES:
        if f"{prefix}conv1.weight" in state:
            return prefix
    raise SelfvosInputError(where, f"holds no backbone trunk (no conv1.weight under any of {list(SOURCE_PREFIXES)})")


def init_backbones(model: nn.Module, source: Union[str, Path], strict: bool = True) -> InitReport:
    """Copy the source's backbone trunk into each of ``model.backbones()``; returns the report.

    With ``strict`` a target backbone that receives no tensor at all, or any shape mismatch, is an error
    (the checkpoint does not hold the same backbone); unmatched names are always reported.
    """
    state = checkpoint_weights(source)
    prefix = find_trunk_prefix(state, str(source))
    targets = model.backbones() if hasattr(model, "backbones") else {"backbone": getattr(model, "backbone")}
    if strict and not targets:
        raise SelfvosInputError(source, f"{type(model).__name__} has no backbone to initialise from this checkpoint "
                                        "(e.g. a flow-only head): train it without --init")
    report = InitReport(source=str(source), source_prefix=prefix)
    for name, trunk in targets.items():
        own = trunk.state_dict()
        loaded, mismatched, absent, update = [], [], [], {}
        for key, tensor in own.items():
            stored = state.get(prefix + key)
            if stored is None:
                absent.append(key)
            elif tuple(stored.shape) != tuple(tensor.shape):
                mismatched.append(f"{key} {tuple(stored.shape)} vs {tuple(tensor.shape)}")
            else:
                update[key] = stored.to(tensor.dtype)
                loaded.append(key)
        if strict and (mismatched or not loaded):
            raise SelfvosInputError(source, f"backbone {name!r} does not fit the checkpoint's trunk: "
                                            f"{len(loaded)} tensors fit, mismatched {mismatched[:3]}")
        trunk.load_state_dict(update, strict=False)
        report.loaded[name], report.mismatched[name], report.absent[name] = loaded, mismatched, absent
    return report
