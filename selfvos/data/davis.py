"""DAVIS-2016 / DAVIS-2017 folders -> a :class:`VideoCollection` of lazily decoded sequences.

Layouts (resolution folder auto-detected):
- ``ROOT/JPEGImages/480p/<seq>/*.jpg`` + ``ROOT/Annotations/480p/<seq>/*.png`` (also ``Full-Resolution``, ``1080p``);
- flat ``ROOT/JPEGImages/<seq>/*.jpg`` + ``ROOT/Annotations/<seq>/*.png``.
DAVIS-2016 masks are grayscale 0/255 -> ids {0, 1}; DAVIS-2017 masks are palette PNGs whose ids are
kept (255 = void). ``binary=True`` maps every id > 0 to 1. Frames without a PNG are unannotated
(DAVIS test-dev ships only first-frame masks); an annotation without a frame is an error.
A split is chosen with ``split="val"`` from ``ROOT/ImageSets/<res|2017|2016>/val.txt``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from selfvos.data.frames import (
    ImageSequenceVideo,
    check_no_gaps,
    check_unique_stems,
    list_images,
    natural_key,
    select_folders,
)
from selfvos.data.video import VideoCollection
from selfvos.errors import SelfvosInputError

RESOLUTIONS = ("480p", "Full-Resolution", "1080p")
DAVIS_FPS = 24.0  # DAVIS sequences were captured at 24 frames per second


def detect_resolution(root: Path) -> Optional[str]:
    """The resolution sub-folder of ``ROOT/JPEGImages`` (``480p`` preferred), or None for the flat layout."""
    images = root / "JPEGImages"
    for res in RESOLUTIONS:
        if (images / res).is_dir():
            return res
    return None


def read_image_set(root: Path, split: str, resolution: Optional[str]) -> List[str]:
    """Sequence names of a split from ``ImageSets``: DAVIS-2017 lists names, DAVIS-2016 lists frame paths."""
    candidates = [root / "ImageSets" / d / f"{split}.txt" for d in (resolution, "2017", "2016", "480p") if d]
    candidates.append(root / "ImageSets" / f"{split}.txt")
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise SelfvosInputError(root / "ImageSets", f"no list file for split {split!r} (looked for {split}.txt)")
    names: List[str] = []
    for line in path.read_text().splitlines():
        token = line.split()[0] if line.split() else ""
        if not token:
            continue
        name = Path(token).parent.name if "/" in token else token
        if name not in names:
            names.append(name)
    if not names:
        raise SelfvosInputError(path, "list file names no sequences")
    return names


def davis_sequence(
    frames_dir: Path,
    masks_dir: Optional[Path],
    *,
    binary: bool = False,
    check_gaps: bool = True,
    fps: Optional[float] = DAVIS_FPS,
    max_side: Optional[int] = None,
) -> ImageSequenceVideo:
    """One sequence folder (+ its annotation folder if any); structural problems raise here."""
    frames = list_images(frames_dir, (".jpg", ".jpeg", ".png"))
    if not frames:
        raise SelfvosInputError(frames_dir, "empty folder: no frames")
    check_unique_stems(frames_dir, frames)
    stems = [p.stem for p in frames]
    if check_gaps:
        check_no_gaps(frames_dir, stems)
    mask_paths: Optional[Dict[int, Path]] = None
    if masks_dir is not None and masks_dir.is_dir():
        index_of = {s: i for i, s in enumerate(stems)}
        mask_paths = {}
        pngs = list_images(masks_dir, (".png",))
        check_unique_stems(masks_dir, pngs)
        for png in pngs:
            if png.stem not in index_of:
                raise SelfvosInputError(png, f"annotation has no matching frame in {frames_dir}")
            mask_paths[index_of[png.stem]] = png
    return ImageSequenceVideo(
        frames_dir.name, frames, mask_paths, binary=binary, fps=fps, max_side=max_side, source=str(frames_dir)
    )


def open_davis(
    root: Union[str, Path],
    *,
    sequences: Optional[Sequence[str]] = None,
    split: Optional[str] = None,
    resolution: Optional[str] = None,
    binary: bool = False,
    check_gaps: bool = True,
    fps: Optional[float] = DAVIS_FPS,
    max_side: Optional[int] = None,
) -> VideoCollection:
    """Open a DAVIS root. ``sequences`` (or ``split``) restricts which sequences are listed;
    ``max_side`` shrinks frames (area) and masks (nearest) so the longer side is at most that."""
    root = Path(root)
    if not (root / "JPEGImages").is_dir():
        raise SelfvosInputError(root, "not a DAVIS folder: JPEGImages/ is missing")
    resolution = resolution or detect_resolution(root)
    frames_root = root / "JPEGImages" / resolution if resolution else root / "JPEGImages"
    masks_root = root / "Annotations" / resolution if resolution else root / "Annotations"
    if not frames_root.is_dir():
        raise SelfvosInputError(frames_root, "resolution folder not found")
    folders = sorted((p for p in frames_root.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name))
    if not folders:
        raise SelfvosInputError(frames_root, "empty folder: no sequence folders")
    if sequences is None and split is not None:
        sequences = read_image_set(root, split, resolution)
    if sequences:
        folders = select_folders(frames_root, folders, sequences)
    videos = [
        davis_sequence(f, masks_root / f.name, binary=binary, check_gaps=check_gaps, fps=fps, max_side=max_side)
        for f in folders
    ]
    return VideoCollection(videos, source=str(root), kind="davis")
