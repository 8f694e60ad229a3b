"""Versioned, resumable store of soft pseudo-masks, one folder per bootstrapping round.

Layout::

    root/round_000/manifest.json            labeler config, source, created time, completed videos, quality
    root/round_000/<video>/00000.png        8-bit soft mask of frame index 0 (value = round(255 * p))
    root/round_000/<video>/_complete.json   per-video completion marker: frame indices and names

Files are named by the frame's *index* in its video (the marker keeps the original frame names), so
``read(round, video, index)`` needs no lookup. Every file is written with :mod:`selfvos.atomic` (a temporary
file in the same folder, moved into place with ``os.replace``), so a crash never leaves a half-written PNG or
manifest. A round is ``complete`` once every video has its marker; re-creating a complete round is an
error unless ``overwrite=True`` for that round, and no operation touches another round's folder.
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

from selfvos.atomic import atomic_write_bytes, atomic_write_json
from selfvos.errors import SelfvosInputError

MaskProvider = Callable[[str, int], Optional[np.ndarray]]
_ROUND_RE = re.compile(r"^round_(\d{3,})$")
MARKER = "_complete.json"


class PseudoLabelStore:
    """Soft pseudo-masks under ``root``, versioned by round (see the module docstring)."""

    def __init__(self, root: Union[str, os.PathLike]) -> None:
        self.root = Path(root)

    # -- rounds -------------------------------------------------------------------------------
    def round_dir(self, round_index: int) -> Path:
        if round_index < 0:
            raise ValueError(f"round must be >= 0, got {round_index}")
        return self.root / f"round_{round_index:03d}"

    def rounds(self) -> List[int]:
        """Round numbers that have a manifest, ascending."""
        if not self.root.is_dir():
            return []
        found = (_ROUND_RE.match(p.name) for p in self.root.iterdir() if (p / "manifest.json").is_file())
        return sorted(int(m.group(1)) for m in found if m)

    def latest_round(self, *, complete_only: bool = True) -> Optional[int]:
        """Highest round number (only complete rounds unless ``complete_only=False``), or None."""
        rounds = [r for r in self.rounds() if not complete_only or self.manifest(r).get("complete")]
        return rounds[-1] if rounds else None

    def manifest(self, round_index: int) -> Dict[str, Any]:
        path = self.round_dir(round_index) / "manifest.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no pseudo-label round {round_index} in {self.root}")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise SelfvosInputError(path, f"corrupt manifest ({err})") from None

    def begin_round(self, round_index: int, labeler: Dict[str, Any], *, source: str = "", videos: Sequence[str] = (),
                    frame_step: int = 1, overwrite: bool = False) -> Dict[str, Any]:
        """Create round ``round_index``, or resume it when an interrupted run with the same settings left it.

        A complete round, or an incomplete one made with different labeler settings / frame step, is an
        error unless ``overwrite=True``, which deletes that round (and only that round) first.
        """
        folder = self.round_dir(round_index)
        if (folder / "manifest.json").is_file() and not overwrite:
            old = self.manifest(round_index)
            if old.get("complete"):
                raise SelfvosInputError(folder, "round already complete; pass overwrite=True (--overwrite) to redo it")
            if old.get("labeler") != labeler or old.get("frame_step") != frame_step:
                raise SelfvosInputError(folder, "an unfinished round with different labeler settings exists; "
                                                "pass overwrite=True to replace it")
            old["videos"] = sorted(set(old.get("videos", [])) | set(videos))
            atomic_write_json(folder / "manifest.json", old)
            return old
        if folder.exists() and overwrite:
            shutil.rmtree(folder)
        manifest = {"round": round_index, "labeler": labeler, "source": source, "frame_step": frame_step,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "videos": sorted(videos),
                    "completed_videos": [], "complete": False, "quality": None}
        atomic_write_json(folder / "manifest.json", manifest)
        return manifest

    def finish_round(self, round_index: int, quality: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Mark the round complete (all listed videos must be done) and record its quality."""
        manifest = self.manifest(round_index)
        missing = sorted(set(manifest["videos"]) - set(manifest["completed_videos"]))
        if missing:
            raise SelfvosInputError(self.round_dir(round_index), f"cannot finish: videos not done: {missing}")
        manifest.update(complete=True, quality=quality, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        atomic_write_json(self.round_dir(round_index) / "manifest.json", manifest)
        return manifest

    # -- videos and frames --------------------------------------------------------------------
    def frame_path(self, round_index: int, video: str, frame_index: int) -> Path:
        return self.round_dir(round_index) / video / f"{frame_index:05d}.png"

    def is_video_complete(self, round_index: int, video: str) -> bool:
        return (self.round_dir(round_index) / video / MARKER).is_file()

    def mark_video_complete(self, round_index: int, video: str, frame_indices: Sequence[int],
                            frame_names: Sequence[str]) -> None:
        """Write the video's completion marker, then add it to the manifest's ``completed_videos``."""
        marker = {"frames": [int(i) for i in frame_indices], "frame_names": list(frame_names)}
        atomic_write_json(self.round_dir(round_index) / video / MARKER, marker)
        manifest = self.manifest(round_index)
        manifest["completed_videos"] = sorted(set(manifest["completed_videos"]) | {video})
        atomic_write_json(self.round_dir(round_index) / "manifest.json", manifest)

    def write(self, round_index: int, video: str, frame_index: int, soft: np.ndarray) -> Path:
        """Store a soft mask (H, W) float in [0, 1] as an 8-bit PNG (atomic); returns its path."""
        if soft.ndim != 2:
            raise ValueError(f"{video}/{frame_index}: soft mask must be (H, W), got {soft.shape}")
        image = Image.fromarray(np.round(np.clip(soft, 0.0, 1.0) * 255.0).astype(np.uint8), mode="L")
        path = self.frame_path(round_index, video, frame_index)
        atomic_write_bytes(path, lambda fh: image.save(fh, format="PNG"))
        return path

    def read(self, round_index: int, video: str, frame_index: int) -> np.ndarray:
        """Soft mask (H, W) float32 in [0, 1]; FileNotFoundError when that frame has none."""
        path = self.frame_path(round_index, video, frame_index)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no pseudo-mask for {video} frame {frame_index} in round {round_index}")
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        except OSError as err:
            raise SelfvosInputError(path, f"unreadable pseudo-mask PNG ({err})") from None

    def frames(self, round_index: int, video: str) -> List[int]:
        """Frame indices stored for ``video`` in that round, ascending."""
        folder = self.round_dir(round_index) / video
        return sorted(int(p.stem) for p in folder.glob("*.png") if p.stem.isdigit()) if folder.is_dir() else []

    def mask_provider(self, round_index: Optional[int] = None) -> MaskProvider:
        """``(video_name, frame_index) -> (H, W) float32 | None`` for the clip sampler (latest complete round by default)."""
        if round_index is None:
            round_index = self.latest_round()
            if round_index is None:
                raise FileNotFoundError(f"{self.root}: no complete pseudo-label round")
        self.manifest(round_index)  # fail early on a missing round

        def provide(video_name: str, frame_index: int) -> Optional[np.ndarray]:
            path = self.frame_path(round_index, video_name, int(frame_index))
            return self.read(round_index, video_name, int(frame_index)) if path.is_file() else None

        return provide
