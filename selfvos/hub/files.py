"""Where a checkpoint's files are: a local directory or a Hub repo (downloaded, or taken from the HF cache).

A checkpoint is a folder with ``config.json`` and ``model.safetensors``. ``resolve_file`` returns the local
path of one of them; for a repo id it goes through ``hf_hub_download``, which with ``HF_HUB_OFFLINE=1``
resolves ``HF_HUB_CACHE/models--org--name/refs/<revision>`` -> ``snapshots/<sha>/<file>`` without network.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from selfvos.errors import SelfvosInputError

CONFIG_NAME = "config.json"
PICKLE_NAMES = ("pytorch_model.bin", "model.pt", "model.pth", "model.ckpt")
_REPO_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")

PathOrRepoId = Union[str, Path]


def is_repo_id(text: str) -> bool:
    """``"org/name"`` or ``"name"`` (letters, digits, ``-``, ``_``, ``.``)."""
    return bool(_REPO_ID.match(text))


def resolve_file(
    path_or_repo_id: PathOrRepoId,
    filename: str,
    *,
    revision: Optional[str] = None,
    cache_dir: Optional[Union[str, Path]] = None,
    token: Optional[str] = None,
) -> Path:
    """Local path of ``filename`` in a checkpoint directory or a Hub repo; one clear error otherwise."""
    local = Path(path_or_repo_id).expanduser()
    if local.is_dir():
        found = local / filename
        if found.is_file():
            return found
        pickles = [name for name in PICKLE_NAMES if (local / name).exists()]
        hint = f" (found {', '.join(pickles)}: pickle checkpoints are never loaded)" if pickles else ""
        raise SelfvosInputError(local, f"not a selfvos checkpoint: no {filename}{hint}")
    repo_id = str(path_or_repo_id)
    if isinstance(path_or_repo_id, Path) or not is_repo_id(repo_id):
        raise SelfvosInputError(repo_id, "no such checkpoint directory (and not a Hub repo id like org/name)")
    return _download(repo_id, filename, revision=revision, cache_dir=cache_dir, token=token)


def _download(
    repo_id: str, filename: str, *, revision: Optional[str], cache_dir: Optional[Union[str, Path]], token: Optional[str]
) -> Path:
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from selfvos import __version__

    where = f"{repo_id}@{revision or 'main'}/{filename}"
    try:
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                cache_dir=cache_dir,
                token=token,
                library_name="selfvos",
                library_version=__version__,
            )
        )
    except LocalEntryNotFoundError:
        cache = cache_dir or constants.HF_HUB_CACHE
        mode = "HF_HUB_OFFLINE=1 and it is" if constants.HF_HUB_OFFLINE else "it could not be downloaded and is"
        raise SelfvosInputError(where, f"not a local directory; as a Hub repo {mode} not in the cache {cache}") from None
    except RepositoryNotFoundError:
        raise SelfvosInputError(where, "no such local directory or Hub repo (or it is private: log in)") from None
    except RevisionNotFoundError:
        raise SelfvosInputError(where, f"the Hub repo has no revision {revision!r}") from None
    except EntryNotFoundError:
        raise SelfvosInputError(where, f"the Hub repo has no {filename}: not a selfvos checkpoint") from None
    except (HFValidationError, HfHubHTTPError, OSError) as err:
        raise SelfvosInputError(where, f"could not fetch from the Hub ({err})") from None


def read_json_object(path: Path, what: str = "JSON file") -> Dict[str, Any]:
    """The JSON object in ``path``; unreadable text, invalid JSON or another JSON type is a
    ``SelfvosInputError`` naming the file (``what`` says what it should have been)."""
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SelfvosInputError(path, f"not a readable {what} ({err})") from None
    if not isinstance(document, dict):
        raise SelfvosInputError(path, f"expected a JSON object, got {type(document).__name__}")
    return document


def read_config(path: Path) -> Tuple[str, Dict[str, Any], Dict[str, Any]]:
    """``config.json`` -> ``(architecture, config dict, whole document)`` with the layout checked."""
    document = read_json_object(path, "JSON config")
    architecture = document.get("architecture")
    if not isinstance(architecture, str) or not architecture:
        raise SelfvosInputError(path, "no 'architecture' name: not a selfvos config.json")
    config = document.get("config")
    if not isinstance(config, dict):
        raise SelfvosInputError(path, "no 'config' object: not a selfvos config.json")
    return architecture, config, document
