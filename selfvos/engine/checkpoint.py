"""Checkpoints: the resumable training state and the atomic safetensors export of trained modules.

Two kinds of checkpoint, for two readers:
- resumable (``output_dir/checkpoints/step_XXXXXXX``): ``accelerator.save_state`` (weights, optimizer,
  scheduler, scaler, RNG, sampler) plus :class:`TrainingState`; only the engine reads it back.
- exported (any folder): ``<name>.safetensors`` per module + ``config.json``; what heads, inference and the
  hub load. Written into a temporary sibling folder and moved into place with ``os.replace``, so a reader
  never sees a half-written export.
"""
from __future__ import annotations

import json
import re
import shutil
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from safetensors.torch import load_file, load_model, save_model
from torch import nn

from selfvos.atomic import replace_dir  # noqa: F401  (re-exported: the trainer and tests use it from here)
from selfvos.errors import SelfvosInputError

STEP_DIR = re.compile(r"^step_(\d{7,})$")
CONFIG_NAME = "config.json"


@dataclass
class TrainingState:
    """Counters the engine must restore on resume, registered with ``accelerator.register_for_checkpointing``.

    ``step``: optimizer updates done; ``round``: bootstrapping rounds finished; ``round_start``: the step at
    which the current round began; ``epoch``: data epoch of the next batch; ``run_id``: the MLflow run to
    continue (empty when tracking is off).
    """

    step: int = 0
    round: int = 0
    round_start: int = 0
    epoch: int = 0
    run_id: str = ""

    def state_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for f in fields(self):
            if f.name in state:
                setattr(self, f.name, type(getattr(self, f.name))(state[f.name]))


def step_dir_name(step: int) -> str:
    """``3`` -> ``"step_0000003"``."""
    return f"step_{step:07d}"


def list_checkpoints(root: Union[str, Path]) -> List[Tuple[int, Path]]:
    """Complete resumable checkpoints under ``root`` as ``(step, path)``, oldest first (partial ones skipped)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return sorted(found)


def latest_checkpoint(root: Union[str, Path]) -> Optional[Path]:
    """The newest complete ``step_XXXXXXX`` folder under ``root``, or None."""
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def export_modules(
    directory: Union[str, Path], modules: Mapping[str, nn.Module], config: Mapping[str, Any]
) -> Path:
    """Write ``<name>.safetensors`` for each module and ``config.json`` into ``directory`` atomically.

    Call on the main process only (the trainer does). Tied weights are stored once (``save_model``).
    """
    directory = Path(directory)
    if not modules:
        raise ValueError("export_modules needs at least one module")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        for name, module in modules.items():
            save_model(module, str(tmp / f"{name}.safetensors"), metadata={"format": "pt"})
        payload = dict(config)
        payload.setdefault("modules", sorted(modules))
        (tmp / CONFIG_NAME).write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
        replace_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


@dataclass
class ExportedCheckpoint:
    """What :func:`load_exported` returns: the parsed ``config.json`` and one state dict per module."""

    config: Dict[str, Any]
    state_dicts: Dict[str, Dict[str, torch.Tensor]]


def load_exported(
    directory: Union[str, Path], modules: Optional[Mapping[str, nn.Module]] = None, strict: bool = True
) -> ExportedCheckpoint:
    """Read an export; with ``modules`` also load each state dict into its module (``strict`` by default)."""
    directory = Path(directory)
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise SelfvosInputError(directory, f"not an exported checkpoint ({CONFIG_NAME} is missing)")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise SelfvosInputError(config_path, f"not valid JSON ({err})") from None
    names = config.get("modules") or sorted(p.stem for p in directory.glob("*.safetensors"))
    state_dicts = {}
    for name in names:
        path = directory / f"{name}.safetensors"
        if not path.is_file():
            raise SelfvosInputError(path, f"weights of module {name!r} listed in {CONFIG_NAME} are missing")
        state_dicts[name] = load_file(str(path))
    for name, module in (modules or {}).items():
        if name not in state_dicts:
            raise SelfvosInputError(directory, f"no weights for module {name!r}; found {sorted(state_dicts)}")
        path = directory / f"{name}.safetensors"
        try:  # load_model restores weights that save_model stored once because they are tied
            load_model(module, str(path), strict=strict)
        except RuntimeError as err:
            raise SelfvosInputError(path, f"does not fit {type(module).__name__}: {err}") from None
    return ExportedCheckpoint(config=config, state_dicts=state_dicts)
