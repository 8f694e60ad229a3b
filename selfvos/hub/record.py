"""Provenance of a checkpoint: the SHA-256 of its weights, and the training record written beside them.

- :func:`weights_sha256` is the one fingerprint of a checkpoint's weights: the SHA-256 of its
  ``model.safetensors`` bytes. Benchmarks store it in every result row they measure on a checkpoint, and
  ``selfvos push --benchmark-json`` puts on a model card only the results whose fingerprint equals the pushed
  weights'.
- :func:`write_training_record` writes ``training.json`` into an exported folder: the recipe, the data
  sources, the full run config, the init checkpoint (and its fingerprint), the selfvos version, the date and
  the fingerprint of the folder's own weights, so that a record copied next to other weights is detected.
  :func:`read_training_record` reads it back for the model card.
"""
from __future__ import annotations

import dataclasses
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Union

from selfvos.atomic import file_sha256
from selfvos.errors import PathLike, SelfvosInputError
from selfvos.hub.files import read_json_object
from selfvos.hub.weights import WEIGHTS_NAME

TRAINING_NAME = "training.json"
SCRATCH = "scratch"
HASH_KEY = "weights_sha256"
RESERVED_KEYS = ("recipe", "data", "config", "init", "init_sha256", "selfvos_version", HASH_KEY, "date")


def weights_file(checkpoint: Union[PathLike, str]) -> Path:
    """The weights file of ``checkpoint``: a ``.safetensors`` file itself, ``<folder>/model.safetensors`` of an
    exported or resumable checkpoint folder, or that file of a Hub repo id (downloaded or from the cache)."""
    from selfvos.hub.files import resolve_file

    path = Path(os.fspath(checkpoint)).expanduser()
    if path.is_file():
        return path
    return resolve_file(checkpoint if isinstance(checkpoint, str) else path, WEIGHTS_NAME)


def weights_sha256(checkpoint: Union[PathLike, str]) -> str:
    """The fingerprint of a checkpoint's weights: hex SHA-256 of its ``model.safetensors`` (:func:`weights_file`)."""
    path = weights_file(checkpoint)
    try:
        return file_sha256(path)
    except OSError as err:
        raise SelfvosInputError(path, f"cannot read the weights to fingerprint them ({err.strerror or err})") from None


def short_hash(digest: Optional[str]) -> str:
    """The first 12 hex digits of a fingerprint, as shown in messages and cards (``"none"`` without one)."""
    return digest[:12] if digest else "none"


def training_record(directory: PathLike, *, recipe: str, data: Iterable[Any], config: Any,
                    init: Optional[PathLike] = None, **extra: Any) -> Dict[str, Any]:
    """The ``training.json`` document for the exported weights in ``directory`` (see :func:`write_training_record`)."""
    clash = sorted(set(extra) & set(RESERVED_KEYS))
    if clash:
        raise TypeError(f"training record: {clash} are written by the record itself, not passed as extras")
    from selfvos import __version__

    init_spec = os.fspath(init) if init is not None and os.fspath(init) != SCRATCH else None
    return {
        "recipe": recipe,
        "data": [data] if isinstance(data, str) else list(data),
        "config": _plain_config(config),
        "init": init_spec or SCRATCH,
        "init_sha256": weights_sha256(init_spec) if init_spec else None,
        "selfvos_version": __version__,
        HASH_KEY: weights_sha256(Path(directory)),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def write_training_record(directory: PathLike, *, recipe: str, data: Iterable[Any], config: Any,
                          init: Optional[PathLike] = None, **extra: Any) -> Path:
    """Write ``<directory>/training.json`` atomically, after the weights are in ``directory``; returns its path.

    ``recipe``: the recipe that trained the weights (``"recipes/finetune.py"``); ``data``: the data source
    specs; ``config``: the full run config (a dataclass or a plain dict); ``init``: the checkpoint the weights
    started from (``None`` or ``"scratch"`` for a random initialisation), fingerprinted as ``init_sha256``;
    ``extra``: further JSON-serialisable facts (``step=...``, ``train_videos=[...]``).
    """
    from selfvos.atomic import atomic_write_json

    record = training_record(directory, recipe=recipe, data=data, config=config, init=init, **extra)
    return atomic_write_json(Path(directory) / TRAINING_NAME, record, indent=2, sort_keys=False, newline=True,
                             default=str)


def read_training_record(path: PathLike) -> Dict[str, Any]:
    """The training record at ``path`` (a ``training.json`` or the folder holding it); ``{}`` when there is none."""
    path = Path(path)
    if path.is_dir():
        path = path / TRAINING_NAME
    if not path.is_file():
        return {}
    return read_json_object(path, "training JSON")


def _plain_config(config: Any) -> Any:
    """A run config as plain JSON data: dataclasses through :func:`selfvos.config.to_dict`, anything else as is."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        from selfvos.config import to_dict

        return to_dict(config)
    return config
