"""Resumable checkpoints: the registered training state and the discovery of ``step_XXXXXXX`` folders.

A resumable checkpoint (``output_dir/checkpoints/step_XXXXXXX``) is ``accelerator.save_state`` (weights,
optimizer, scheduler, scaler, RNG, sampler) plus :class:`TrainingState`; only the engine reads it back.
It is written as ``step_XXXXXXX.partial`` and renamed when complete, so a partial one is never resumed.
Trained models are exported with ``save_pretrained`` (``Trainer.export``), the format inference and the
hub load.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

STEP_DIR = re.compile(r"^step_(\d{7,})$")


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
