"""Videos stored as folders of images: one folder = one video, a folder of folders = a collection.

:class:`ImageSequenceVideo` is also the per-sequence video of the DAVIS and YouTube-VOS readers:
frame paths in temporal order plus an optional ``{frame index: mask path}`` map (sparse for
YouTube-VOS). Frames and masks are decoded only when asked for.

Structural problems (empty folder, a gap in the frame numbering, two frames with one name such as
``00001.jpg`` and ``00001.png``) are raised when the folder is opened; a corrupt file, a frame whose size
differs from the first frame's, or a mask whose size differs from its frame when that frame is read.
"""
from __future__ import annotations

import math
import re
from functools import reduce
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from selfvos.data.image_io import (
    IMAGE_EXTENSIONS,
    check_mask_matches_frame,
    image_size,
    read_mask,
    read_rgb,
    shrink_frame,
    shrink_mask,
)
from selfvos.data.video import LazyVideo, VideoCollection
from selfvos.errors import SelfvosInputError

_NUMBERED = re.compile(r"^(.*?)(\d+)$")


def natural_key(name: str) -> list:
    """Sort key that orders ``frame2`` before ``frame10`` (digit runs compare as numbers, the rest as text)."""
    parts = re.split(r"(\d+)", name)
    return [int(part) if k % 2 else part.lower() for k, part in enumerate(parts)]


def check_unique_stems(folder: Path, files: Sequence[Path]) -> None:
    """Raise when two files share a name without extension (``00001.jpg`` and ``00001.png``): frames and
    masks are matched and written by that name, so one of them would be silently lost."""
    seen: Dict[str, Path] = {}
    for path in files:
        if path.stem in seen:
            raise SelfvosInputError(folder, f"two files named {path.stem!r}: {seen[path.stem].name} and {path.name} "
                                            "(keep one)")
        seen[path.stem] = path


def list_images(folder: Path, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> List[Path]:
    """Image files directly inside ``folder`` (hidden files skipped), naturally sorted by name."""
    files = [
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions
    ]
    return sorted(files, key=lambda p: natural_key(p.name))


def check_no_gaps(folder: Path, stems: Sequence[str]) -> None:
    """Raise when numbered frames (``00000, 00001, 00003``) skip a number.

    The step is the gcd of consecutive differences, so YouTube-VOS style numbering
    (``00000, 00005, 00010``) is accepted. Names without a common ``prefix + number`` form are not checked.
    """
    parsed = [_NUMBERED.match(s) for s in stems]
    if len(stems) < 3 or not all(parsed) or len({m.group(1) for m in parsed}) != 1:
        return
    numbers = [int(m.group(2)) for m in parsed]
    diffs = [b - a for a, b in zip(numbers, numbers[1:])]
    if any(d <= 0 for d in diffs):
        return
    step = reduce(math.gcd, diffs)
    for k, d in enumerate(diffs):
        if d != step:
            missing = numbers[k] + step
            width = len(parsed[k].group(2))
            name = f"{parsed[k].group(1)}{missing:0{width}d}"
            raise SelfvosInputError(
                folder, f"missing frame {name!r} (numbering jumps from {stems[k]!r} to {stems[k + 1]!r})"
            )


class ImageSequenceVideo(LazyVideo):
    """One video as image files; optional masks for some or all frames.

    Args:
        name: video name (the folder name).
        frame_paths: frame images in temporal order.
        mask_paths: ``{frame index: annotation PNG}``; ``None`` for an unlabeled video.
        binary: map every object id > 0 to 1 when reading masks.
        fps: frame rate if known.
        max_side: shrink frames (area) and masks (nearest) so the longer side is at most this.
        source: where it came from (the folder).
    """

    def __init__(
        self,
        name: str,
        frame_paths: Sequence[Path],
        mask_paths: Optional[Dict[int, Path]] = None,
        *,
        binary: bool = False,
        fps: Optional[float] = None,
        max_side: Optional[int] = None,
        source: str = "",
    ) -> None:
        self.name, self.fps, self.source, self.binary, self.max_side = name, fps, source, binary, max_side
        self.frame_paths = [Path(p) for p in frame_paths]
        self.mask_paths = None if mask_paths is None else dict(sorted(mask_paths.items()))
        self._names = [p.stem for p in self.frame_paths]
        self._size: Optional[Tuple[int, int]] = None
        self.meta: dict = {}

    @property
    def frame_names(self) -> List[str]:
        return list(self._names)

    @property
    def has_masks(self) -> bool:
        return bool(self.mask_paths)

    def annotated_indices(self) -> List[int]:
        return list(self.mask_paths) if self.mask_paths else []

    def frame_size(self) -> Tuple[int, int]:
        """(H, W) of the first frame (header only): the size every frame of the video must have."""
        if self._size is None:
            self._size = image_size(self.frame_paths[0])
        return self._size

    def _read_frame(self, index: int) -> np.ndarray:
        path = self.frame_paths[index]
        frame = read_rgb(path)
        height, width = self.frame_size()
        if frame.shape[:2] != (height, width):
            raise SelfvosInputError(path, f"frame is {frame.shape[1]}x{frame.shape[0]} (WxH) but the video's first "
                                          f"frame {self.frame_paths[0].name} is {width}x{height}: all frames of a "
                                          "video must have one size")
        return shrink_frame(frame, self.max_side)

    def _read_mask(self, index: int) -> Optional[np.ndarray]:
        path = (self.mask_paths or {}).get(index)
        if path is None:
            return None
        mask = read_mask(path, binary=self.binary)
        check_mask_matches_frame(mask, path, self.frame_paths[index])
        return shrink_mask(mask, self.max_side)


def image_sequence(
    folder: Union[str, Path], *, check_gaps: bool = True, fps: Optional[float] = None, max_side: Optional[int] = None
) -> ImageSequenceVideo:
    """One folder of ``*.jpg|*.jpeg|*.png`` frames -> one unlabeled video."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SelfvosInputError(folder, "not a folder")
    frames = list_images(folder)
    if not frames:
        raise SelfvosInputError(folder, f"empty folder: no {'/'.join(IMAGE_EXTENSIONS)} images")
    check_unique_stems(folder, frames)
    if check_gaps:
        check_no_gaps(folder, [p.stem for p in frames])
    return ImageSequenceVideo(folder.name, frames, None, fps=fps, max_side=max_side, source=str(folder))


def open_frames(
    path: Union[str, Path],
    *,
    sequences: Optional[Sequence[str]] = None,
    check_gaps: bool = True,
    fps: Optional[float] = None,
    max_side: Optional[int] = None,
) -> VideoCollection:
    """A folder of images (one video) or a folder of image folders (one video each)."""
    path = Path(path)
    if not path.is_dir():
        raise SelfvosInputError(path, "not a folder of images")
    if list_images(path):
        videos = [image_sequence(path, check_gaps=check_gaps, fps=fps, max_side=max_side)]
    else:
        subfolders = sorted(
            (p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: natural_key(p.name)
        )
        if not subfolders:
            raise SelfvosInputError(path, "empty folder: no images and no sub-folders of images")
        if sequences:
            subfolders = select_folders(path, subfolders, sequences)
        videos = [image_sequence(p, check_gaps=check_gaps, fps=fps, max_side=max_side) for p in subfolders]
    return VideoCollection(videos, source=str(path), kind="frames")


def select_folders(root: Path, folders: Sequence[Path], sequences: Sequence[str]) -> List[Path]:
    """The folders named in ``sequences`` (in that order); an unknown name is an error."""
    by_name = {p.name: p for p in folders}
    unknown = [s for s in sequences if s not in by_name]
    if unknown:
        raise SelfvosInputError(root, f"no sequence(s) {unknown}; available: {sorted(by_name)}")
    return [by_name[s] for s in sequences]
