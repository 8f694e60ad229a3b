"""Publish a checkpoint to the Hugging Face Hub: build the exact upload folder, then upload it.

``push_checkpoint`` first loads the checkpoint strictly (a broken checkpoint is never published), then
writes ``model.safetensors`` (byte copy), ``config.json`` and ``README.md`` (the model card) into a
folder. With ``dry_run_dir`` that folder is the result; otherwise ``upload_folder`` sends it
(``HfApi().create_repo`` + ``upload_folder``). Tests replace ``upload_folder`` with a fake.

The card's numbers are bound to the weights: only benchmark results whose ``weights_sha256`` equals the
checkpoint's are used (a file with none, or with unbound results, is refused), and the copied weights must
still have that fingerprint. The folder is built under a sibling name and moved into place when complete.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Union

from selfvos.atomic import staging_path
from selfvos.errors import SelfvosInputError
from selfvos.hub.card import render_model_card
from selfvos.hub.files import CONFIG_NAME, is_repo_id
from selfvos.hub.record import file_sha256, short_hash, weights_sha256
from selfvos.hub.weights import WEIGHTS_NAME

CARD_NAME = "README.md"
UPLOAD_FILES = (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME)


@dataclass
class PushResult:
    """Where the checkpoint went: a Hub commit URL, or the dry-run folder; ``files`` as uploaded."""

    location: str
    files: List[str]
    dry_run: bool


def build_upload_folder(
    checkpoint_dir: Union[str, Path],
    out_dir: Union[str, Path],
    repo_id: str,
    benchmark_json: Optional[Union[str, Path]] = None,
    verify: bool = True,
) -> List[str]:
    """Write weights, ``config.json`` and the card into ``out_dir`` (new or empty); returns the file names."""
    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    if not checkpoint_dir.is_dir():
        raise SelfvosInputError(checkpoint_dir, "checkpoint directory not found")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise SelfvosInputError(out_dir, "output folder exists and is not empty; refusing to mix files into an upload")
    if verify:
        from selfvos.hub.mixin import from_pretrained

        from_pretrained(checkpoint_dir, strict=True)
    digest = weights_sha256(checkpoint_dir)
    card = render_model_card(checkpoint_dir, repo_id, benchmark_json, weights_digest=digest)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_path(out_dir)
    try:
        _write_upload_files(checkpoint_dir, staging, card, digest)
        if out_dir.exists():
            out_dir.rmdir()  # new or empty (checked above)
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return sorted(p.name for p in out_dir.iterdir())


def _write_upload_files(checkpoint_dir: Path, folder: Path, card: str, digest: str) -> None:
    """Copy the weights and config of ``checkpoint_dir`` into the new ``folder`` with ``card`` as README.md;
    refuses weights whose copy no longer has the fingerprint ``digest`` the card was written for."""
    folder.mkdir()
    shutil.copyfile(checkpoint_dir / WEIGHTS_NAME, folder / WEIGHTS_NAME)
    copied = file_sha256(folder / WEIGHTS_NAME)
    if copied != digest:
        raise SelfvosInputError(checkpoint_dir / WEIGHTS_NAME, f"changed while the upload was prepared (weights "
                                                               f"{short_hash(digest)}, now {short_hash(copied)})")
    shutil.copyfile(checkpoint_dir / CONFIG_NAME, folder / CONFIG_NAME)
    (folder / CARD_NAME).write_text(card)


def upload_folder(
    folder: Path, repo_id: str, *, private: bool = False, revision: Optional[str] = None,
    commit_message: str = "Upload selfvos checkpoint",
) -> str:
    """Create the repo (and branch) if needed and upload ``folder``; returns the commit URL."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        raise SelfvosInputError(repo_id, "HF_HUB_OFFLINE=1 is set: unset it to push, or use --dry-run OUT_DIR")
    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), revision=revision,
                             commit_message=commit_message)
    return str(getattr(info, "commit_url", info))


def push_checkpoint(
    checkpoint_dir: Union[str, Path],
    repo_id: str,
    *,
    private: bool = False,
    revision: Optional[str] = None,
    benchmark_json: Optional[Union[str, Path]] = None,
    dry_run_dir: Optional[Union[str, Path]] = None,
    commit_message: str = "Upload selfvos checkpoint",
) -> PushResult:
    """Publish ``checkpoint_dir`` to ``repo_id`` (or only write the upload folder to ``dry_run_dir``)."""
    if not is_repo_id(repo_id):
        raise SelfvosInputError(repo_id, "not a Hub repo id (expected ORG/NAME or NAME: letters, digits, '-', '_', '.')")
    if dry_run_dir is not None:
        files = build_upload_folder(checkpoint_dir, dry_run_dir, repo_id, benchmark_json)
        return PushResult(str(dry_run_dir), files, dry_run=True)
    with tempfile.TemporaryDirectory(prefix="selfvos-upload-") as tmp:
        folder = Path(tmp) / "upload"
        files = build_upload_folder(checkpoint_dir, folder, repo_id, benchmark_json)
        url = upload_folder(folder, repo_id, private=private, revision=revision, commit_message=commit_message)
    return PushResult(url, files, dry_run=False)
