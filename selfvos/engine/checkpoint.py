"""Resumable checkpoints: the registered training state, the discovery of ``step_XXXXXXX`` folders and
their integrity manifest.

A resumable checkpoint (``output_dir/checkpoints/step_XXXXXXX``) is ``accelerator.save_state`` (weights,
optimizer, scheduler, scaler, RNG, sampler) plus :class:`TrainingState`; only the engine reads it back.
It is written as ``step_XXXXXXX.partial`` and renamed when complete, so a partial one is never resumed.
Before the rename the main process adds ``selfvos_manifest.json``::

    {"format": 1, "step": 300, "files": {"model.safetensors": {"size": 1584, "sha256": "..."}, ...}}

:func:`verify_checkpoint` checks every listed file against it, so a checkpoint damaged later (a truncated
or deleted file, a disk error) is recognised before it is loaded. Checkpoints written before manifests
existed carry none and are accepted as they are. Trained models are exported with ``save_pretrained``
(``Trainer.export``), the format inference and the hub load.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from selfvos.atomic import atomic_write_json, file_sha256

STEP_DIR = re.compile(r"^step_(\d{7,})$")
MANIFEST_NAME = "selfvos_manifest.json"
MANIFEST_FORMAT = 1


@dataclass
class TrainingState:
    """Counters the engine must restore on resume, registered with ``accelerator.register_for_checkpointing``.

    ``step``: optimizer updates done (skipped ones included); ``round``: bootstrapping rounds finished;
    ``round_start``: the step at which the current round began; ``epoch``: data epoch of the next batch;
    ``run_id``: the MLflow run to continue (empty when tracking is off); ``nonfinite_skipped``: updates
    skipped in all because the loss or gradient norm was NaN/inf; ``nonfinite_streak``: how many of the
    latest updates in a row were skipped.
    """

    step: int = 0
    round: int = 0
    round_start: int = 0
    epoch: int = 0
    run_id: str = ""
    nonfinite_skipped: int = 0
    nonfinite_streak: int = 0

    def state_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for f in fields(self):
            if f.name in state:
                setattr(self, f.name, type(getattr(self, f.name))(state[f.name]))

    def reset(self) -> None:
        """Back to the values of a fresh run (before another checkpoint is tried)."""
        self.load_state_dict(TrainingState().state_dict())


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


def latest_intact_checkpoint(root: Union[str, Path]) -> Optional[Path]:
    """The newest ``step_XXXXXXX`` folder under ``root`` that :func:`verify_checkpoint` accepts, or None."""
    for _, path in reversed(list_checkpoints(root)):
        if verify_checkpoint(path) is None:
            return path
    return None



def write_manifest(folder: Union[str, Path], step: int) -> Path:
    """Record name, size and SHA-256 of every file under ``folder`` in ``folder/selfvos_manifest.json``."""
    folder = Path(folder)
    files = {
        path.relative_to(folder).as_posix(): {"size": path.stat().st_size, "sha256": file_sha256(path)}
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME
    }
    document = {"format": MANIFEST_FORMAT, "step": int(step), "files": files}
    return atomic_write_json(folder / MANIFEST_NAME, document, newline=True)


def verify_checkpoint(folder: Union[str, Path]) -> Optional[str]:
    """None when ``folder`` matches its manifest (or predates manifests); otherwise what is wrong, naming
    the file: ``"optimizer.bin: 812 bytes, the manifest says 8922 (truncated?)"``."""
    folder = Path(folder)
    manifest = folder / MANIFEST_NAME
    if not manifest.exists():
        return None
    files = _manifest_files(manifest)
    if isinstance(files, str):
        return files
    for name, entry in files.items():
        problem = _file_problem(folder / name, entry)
        if problem is not None:
            return f"{name}: {problem}"
    return None


def _manifest_files(manifest: Path) -> Union[str, Dict[str, Mapping[str, Any]]]:
    """The ``files`` table of a manifest, or the problem with the manifest itself (a string)."""
    try:
        document = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"{MANIFEST_NAME}: not a readable manifest ({err})"
    files = document.get("files") if isinstance(document, dict) else None
    valid = isinstance(files, dict) and all(
        isinstance(name, str) and isinstance(entry, dict) and isinstance(entry.get("size"), int)
        and isinstance(entry.get("sha256"), str)
        for name, entry in files.items()
    )
    if not valid or not files:
        return f"{MANIFEST_NAME}: not a checkpoint manifest (expected a 'files' table of sizes and sha256 sums)"
    return files


def _file_problem(path: Path, entry: Mapping[str, Any]) -> Optional[str]:
    """What is wrong with one file against its manifest entry, or None."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != entry["size"]:
        return f"{size} bytes, the manifest says {entry['size']} (truncated or overwritten)"
    if file_sha256(path) != entry["sha256"]:
        return "content does not match its sha256 in the manifest (corrupted)"
    return None
