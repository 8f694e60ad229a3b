"""Versioned, resumable store of soft pseudo-masks, one folder per bootstrapping round, each all-or-nothing.

Layout::

    root/round_000/manifest.json            labeler config, source, created time, completed videos, quality
    root/round_000/<video>/00000.png        8-bit soft mask of frame index 0 (value = round(255 * p))
    root/round_000/<video>/_complete.json   per-video completion marker: frame indices and names
    root/.round_001.partial/...             a round being built (same layout), resumable

A round is built in its staging folder ``.round_KKK.partial`` and moved to ``round_KKK`` with
:func:`selfvos.atomic.replace_dir` by :meth:`PseudoLabelStore.finish_round`, so a ``round_KKK`` folder is
always complete: a crash leaves no partial round where readers look, and ``overwrite=True`` keeps the old
complete round in place until its replacement is finished. Readers (:meth:`~PseudoLabelStore.read`,
:meth:`~PseudoLabelStore.mask_provider`, :meth:`~PseudoLabelStore.rounds`) see complete rounds only; the
builder's methods (:meth:`~PseudoLabelStore.write`, :meth:`~PseudoLabelStore.mark_video_complete`) work in
the staging folder, and ``staging=True`` lets the builder read it back (to score a round before finishing it).

Files are named by the frame's *index* in its video (the marker keeps the original frame names). Every file is
written with :mod:`selfvos.atomic`, so a crash never leaves a half-written PNG or manifest. Re-running an
interrupted round resumes its staging folder (videos with a marker are skipped); the next
:meth:`~PseudoLabelStore.begin_round` also cleans what a killed run left behind (temporary files, the old copy
of a replaced round, a finished round that was not yet moved into place). Re-creating a complete round is an
error unless ``overwrite=True`` for that round, and no operation touches another round's folder.

Several processes may build one round together (:mod:`selfvos.pseudo.generate` sharding): one process calls
:meth:`~PseudoLabelStore.begin_round`, each writes the frames and markers of its own videos with
``mark_video_complete(..., update_manifest=False)``, and that one process collects the markers
(:meth:`~PseudoLabelStore.sync_completed`) and finishes the round. The markers, not the staged manifest, say
which videos are done.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
from PIL import Image

from selfvos.atomic import atomic_write_bytes, atomic_write_json, replace_dir
from selfvos.errors import SelfvosInputError

MaskProvider = Callable[[str, int], Optional[np.ndarray]]
_ROUND_RE = re.compile(r"^round_(\d{3,})$")
_STAGING_RE = re.compile(r"^\.round_(\d{3,})\.partial$")
_OLD_RE = re.compile(r"^\.(round_\d{3,})\.old-[0-9a-f]+$")
MARKER = "_complete.json"
STAGING_SUFFIX = ".partial"


class PseudoLabelStore:
    """Soft pseudo-masks under ``root``, versioned by round (see the module docstring)."""

    def __init__(self, root: Union[str, os.PathLike]) -> None:
        self.root = Path(root)

    # -- folders ------------------------------------------------------------------------------
    def round_dir(self, round_index: int) -> Path:
        """Folder of the complete round ``round_index`` (it exists only once the round is finished)."""
        if round_index < 0:
            raise ValueError(f"round must be >= 0, got {round_index}")
        return self.root / f"round_{round_index:03d}"

    def staging_dir(self, round_index: int) -> Path:
        """Folder the round is built in until :meth:`finish_round` moves it to :meth:`round_dir`."""
        return self.root / f".{self.round_dir(round_index).name}{STAGING_SUFFIX}"

    def _dir(self, round_index: int, staging: bool) -> Path:
        return self.staging_dir(round_index) if staging else self.round_dir(round_index)

    # -- rounds -------------------------------------------------------------------------------
    def rounds(self, *, include_unfinished: bool = False) -> List[int]:
        """Numbers of the complete rounds, ascending (plus the rounds being built when ``include_unfinished``)."""
        if not self.root.is_dir():
            return []
        found = set()
        for entry in self.root.iterdir():
            complete = _ROUND_RE.match(entry.name)
            if complete and _read_json(entry / "manifest.json").get("complete"):
                found.add(int(complete.group(1)))
            building = _STAGING_RE.match(entry.name) if include_unfinished else None
            if building and (entry / "manifest.json").is_file():
                found.add(int(building.group(1)))
        return sorted(found)

    def latest_round(self, *, complete_only: bool = True) -> Optional[int]:
        """Highest round number (only complete rounds unless ``complete_only=False``), or None."""
        rounds = self.rounds(include_unfinished=not complete_only)
        return rounds[-1] if rounds else None

    def manifest(self, round_index: int, *, staging: bool = False) -> Dict[str, Any]:
        """The manifest of complete round ``round_index`` (of the round being built when ``staging``)."""
        path = self._dir(round_index, staging) / "manifest.json"
        if not path.is_file():
            state = "unfinished" if staging else "complete"
            raise FileNotFoundError(f"{path}: no {state} pseudo-label round {round_index} in {self.root}")
        try:
            manifest = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise SelfvosInputError(path, f"corrupt manifest ({err})") from None
        if not isinstance(manifest, dict):
            raise SelfvosInputError(path, f"corrupt manifest (a JSON {type(manifest).__name__}, not an object)")
        return manifest

    def begin_round(self, round_index: int, labeler: Dict[str, Any], *, source: str = "", videos: Sequence[str] = (),
                    frame_step: int = 1, overwrite: bool = False) -> Dict[str, Any]:
        """Start building round ``round_index`` in its staging folder, or resume an interrupted build with the
        same settings.

        A complete round, or an unfinished one made with different labeler settings / frame step, is an error
        unless ``overwrite=True``, which starts a fresh build of that round (and only that round); the old
        complete round stays readable until the new one is finished.
        """
        self.clean_stale()
        final, staging = self.round_dir(round_index), self.staging_dir(round_index)
        if _read_json(final / "manifest.json").get("complete") and not overwrite:
            raise SelfvosInputError(final, "round already complete; pass overwrite=True (--overwrite) to redo it")
        if final.is_dir() and not _read_json(final / "manifest.json").get("complete") and not staging.exists():
            os.replace(final, staging)  # an unfinished round in place, written before rounds were staged
        if overwrite and staging.exists():
            shutil.rmtree(staging)
        if (staging / "manifest.json").is_file():
            return self._resume(round_index, labeler, videos, frame_step)
        manifest = {"round": round_index, "labeler": labeler, "source": source, "frame_step": frame_step,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "videos": sorted(videos),
                    "completed_videos": [], "complete": False, "quality": None}
        atomic_write_json(staging / "manifest.json", manifest)
        return manifest

    def _resume(self, round_index: int, labeler: Dict[str, Any], videos: Sequence[str],
                frame_step: int) -> Dict[str, Any]:
        """Continue the unfinished build of ``round_index`` when its settings match, adding ``videos``."""
        old = self.manifest(round_index, staging=True)
        if old.get("labeler") != labeler or old.get("frame_step") != frame_step:
            raise SelfvosInputError(self.staging_dir(round_index), "an unfinished round with different labeler "
                                                                   "settings exists; pass overwrite=True to replace it")
        old["videos"] = sorted(set(old.get("videos", [])) | set(videos))
        atomic_write_json(self.staging_dir(round_index) / "manifest.json", old)
        return old

    def finish_round(self, round_index: int, quality: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Mark the round complete (all listed videos must be done), record its quality and move it into place."""
        manifest = self.manifest(round_index, staging=True)
        missing = sorted(set(manifest["videos"]) - set(manifest["completed_videos"]))
        if missing:
            raise SelfvosInputError(self.staging_dir(round_index), f"cannot finish: videos not done: {missing}")
        manifest.update(complete=True, quality=quality, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        atomic_write_json(self.staging_dir(round_index) / "manifest.json", manifest)
        replace_dir(self.staging_dir(round_index), self.round_dir(round_index))
        return manifest

    def clean_stale(self) -> List[Path]:
        """Tidy what a killed run left behind; returns the removed paths.

        - ``.round_KKK.old-*`` (the previous copy of a round being replaced): deleted once ``round_KKK`` is in
          place, otherwise put back (or replaced by a finished staging folder);
        - a staging folder whose manifest says complete (killed while moving it into place): moved into place;
        - temporary files of interrupted atomic writes (``.*.tmp``) inside staging folders: deleted.
        """
        if not self.root.is_dir():
            return []
        removed: List[Path] = []
        for entry in sorted(self.root.iterdir()):
            building = _STAGING_RE.match(entry.name)
            if building and _read_json(entry / "manifest.json").get("complete"):
                replace_dir(entry, self.root / f"round_{building.group(1)}")
        for entry in sorted(self.root.iterdir()):
            old = _OLD_RE.match(entry.name)
            if old and (self.root / old.group(1)).exists():
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
            elif old:
                os.replace(entry, self.root / old.group(1))
        for entry in self.root.iterdir():
            if _STAGING_RE.match(entry.name):
                for tmp in entry.rglob(".*.tmp"):
                    tmp.unlink(missing_ok=True)
                    removed.append(tmp)
        return removed

    # -- videos and frames --------------------------------------------------------------------
    def frame_path(self, round_index: int, video: str, frame_index: int, *, staging: bool = False) -> Path:
        """Where frame ``frame_index`` of ``video`` is stored (in the staging folder when ``staging``)."""
        return self._dir(round_index, staging) / video / f"{frame_index:05d}.png"

    def is_video_complete(self, round_index: int, video: str) -> bool:
        """Whether the build of ``round_index`` has finished ``video`` (its marker is in the staging folder)."""
        return (self.staging_dir(round_index) / video / MARKER).is_file()

    def mark_video_complete(self, round_index: int, video: str, frame_indices: Sequence[int],
                            frame_names: Sequence[str], *, update_manifest: bool = True) -> None:
        """Write the video's completion marker, then add it to the staged manifest's ``completed_videos``.

        ``update_manifest=False`` writes the marker only: what the ranks of a sharded build do (the manifest
        has one writer, which collects the markers with :meth:`sync_completed`).
        """
        staging = self.staging_dir(round_index)
        marker = {"frames": [int(i) for i in frame_indices], "frame_names": list(frame_names)}
        atomic_write_json(staging / video / MARKER, marker)
        if not update_manifest:
            return
        manifest = self.manifest(round_index, staging=True)
        manifest["completed_videos"] = sorted(set(manifest["completed_videos"]) | {video})
        atomic_write_json(staging / "manifest.json", manifest)

    def sync_completed(self, round_index: int) -> Dict[str, Any]:
        """Add every listed video of the round being built whose marker exists to the staged manifest's
        ``completed_videos`` (the markers written by the ranks of a sharded build); returns the manifest."""
        manifest = self.manifest(round_index, staging=True)
        marked = {v for v in manifest.get("videos", []) if self.is_video_complete(round_index, v)}
        completed = sorted(set(manifest.get("completed_videos", [])) | marked)
        if completed != manifest.get("completed_videos"):
            manifest["completed_videos"] = completed
            atomic_write_json(self.staging_dir(round_index) / "manifest.json", manifest)
        return manifest

    def write(self, round_index: int, video: str, frame_index: int, soft: np.ndarray) -> Path:
        """Store a soft mask (H, W) float in [0, 1] as an 8-bit PNG (atomic) in the round being built."""
        if soft.ndim != 2:
            raise ValueError(f"{video}/{frame_index}: soft mask must be (H, W), got {soft.shape}")
        if not (self.staging_dir(round_index) / "manifest.json").is_file():
            raise SelfvosInputError(self.staging_dir(round_index), f"round {round_index} is not being built "
                                                                   "(call begin_round first)")
        image = Image.fromarray(np.round(np.clip(soft, 0.0, 1.0) * 255.0).astype(np.uint8), mode="L")
        path = self.frame_path(round_index, video, frame_index, staging=True)
        atomic_write_bytes(path, lambda fh: image.save(fh, format="PNG"))
        return path

    def read(self, round_index: int, video: str, frame_index: int, *, staging: bool = False) -> np.ndarray:
        """Soft mask (H, W) float32 in [0, 1]; FileNotFoundError when that frame has none."""
        path = self.frame_path(round_index, video, frame_index, staging=staging)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no pseudo-mask for {video} frame {frame_index} in round {round_index}")
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        except OSError as err:
            raise SelfvosInputError(path, f"unreadable pseudo-mask PNG ({err})") from None

    def frames(self, round_index: int, video: str, *, staging: bool = False) -> List[int]:
        """Frame indices stored for ``video`` in that round, ascending."""
        folder = self._dir(round_index, staging) / video
        return sorted(int(p.stem) for p in folder.glob("*.png") if p.stem.isdigit()) if folder.is_dir() else []

    def mask_provider(self, round_index: Optional[int] = None, *, staging: bool = False) -> MaskProvider:
        """``(video_name, frame_index) -> (H, W) float32 | None`` for the clip sampler (latest complete round by
        default; the round being built when ``staging``)."""
        if round_index is None:
            round_index = self.latest_round()
            if round_index is None:
                raise FileNotFoundError(f"{self.root}: no complete pseudo-label round")
        self.manifest(round_index, staging=staging)  # fail early on a missing round

        def provide(video_name: str, frame_index: int) -> Optional[np.ndarray]:
            path = self.frame_path(round_index, video_name, int(frame_index), staging=staging)
            return self.read(round_index, video_name, int(frame_index), staging=staging) if path.is_file() else None

        return provide


def _read_json(path: Path) -> Dict[str, Any]:
    """A JSON object from ``path``; ``{}`` when it is missing or unreadable (used for presence checks only)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
