"""Writing videos to disk: DAVIS-palette PNG masks and whole DAVIS-style folders, always atomically.

- :func:`encode_palette_png` / :func:`save_palette_png`: ``(H, W)`` uint8 object ids -> mode ``"P"`` PNG with the
  palette DAVIS ships in its annotations (the first 22 entries are the PASCAL-VOC colours with 191 for 192, the
  rest a grey ramp, so 255 = void is white). Ids are stored as-is: reading the PNG back gives the same ids.
- :func:`export_davis`: a :class:`~selfvos.data.video.VideoCollection` ->
  ``dst/JPEGImages/480p/<seq>/<frame>.jpg`` + ``dst/Annotations/480p/<seq>/<frame>.png`` (only annotated
  frames get a PNG). The tree is built under ``dst.tmp-<random>`` and renamed into place, so ``dst`` is either
  absent or complete.
- :func:`fit_max_side`: the one resize rule shared by every writer (frames area/bilinear, masks nearest).
- :func:`check_output_folder`: refuses a mask destination that is a file or holds files other than masks
  (all-or-nothing folders themselves come from :func:`selfvos.atomic.staged_folder`).
"""
from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
from PIL import Image

from selfvos.atomic import atomic_write_bytes, naming_path, replace_dir, staging_path
from selfvos.data.video import VideoCollection
from selfvos.errors import PathLike, SelfvosInputError

_VOC_HEAD = [
    (0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128), (0, 128, 128),
    (128, 128, 128), (64, 0, 0), (191, 0, 0), (64, 128, 0), (191, 128, 0), (64, 0, 128), (191, 0, 128),
    (64, 128, 128), (191, 128, 128), (0, 64, 0), (128, 64, 0), (0, 191, 0), (128, 191, 0), (0, 64, 128),
    (128, 64, 128),
]  # fmt: skip
DAVIS_PALETTE: np.ndarray = np.array(_VOC_HEAD + [(i, i, i) for i in range(len(_VOC_HEAD), 256)], dtype=np.uint8)
"""(256, 3) uint8: the palette of the official DAVIS-2017 annotation PNGs."""

# name -> (frames folder, annotations folder) relative to the dataset root; "<seq>" folders go below them.
LAYOUTS: Dict[str, Tuple[str, str]] = {
    "davis2017": ("JPEGImages/480p", "Annotations/480p"),
    "flat": ("JPEGImages", "Annotations"),  # as in ../shared/data/davis2016-train-240p
}


def encode_palette_png(ids: np.ndarray) -> bytes:
    """(H, W) uint8 object ids -> bytes of a palette PNG (DAVIS palette)."""
    ids = np.asarray(ids)
    if ids.ndim != 2 or ids.dtype != np.uint8:
        raise ValueError(f"mask ids must be uint8 (H, W), got {ids.dtype} {ids.shape}")
    image = Image.frombytes("P", (ids.shape[1], ids.shape[0]), np.ascontiguousarray(ids).tobytes())
    image.putpalette(DAVIS_PALETTE.reshape(-1).tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def decode_id_png(data: bytes) -> np.ndarray:
    """Bytes of a palette (or grey) PNG -> (H, W) uint8 ids; palette indices are taken as ids, never colours."""
    image = Image.open(io.BytesIO(data))
    if image.mode not in ("P", "L"):
        raise ValueError(f"mask PNG must be palette or grey, got mode {image.mode}")
    return np.array(image, dtype=np.uint8)


def save_palette_png(path: PathLike, ids: np.ndarray) -> Path:
    """Write (H, W) uint8 ids as a DAVIS-palette PNG at ``path`` (temp file + rename). Returns the path.

    An ``OSError`` that names no file (a full disk while writing) is raised naming ``path``."""
    with naming_path(path):
        return atomic_write_bytes(path, encode_palette_png(ids))


def check_output_folder(dst: PathLike, option: str = "--out") -> None:
    """Refuse an output folder that cannot be replaced as a whole: ``dst`` is a file, sits below a file, or
    already holds anything but ``*.png`` masks (an earlier output) and hidden files (so a folder of other
    data is never deleted by mistake)."""
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise SelfvosInputError(dst, f"{option} exists and is not a folder")
    for parent in dst.parents:
        if parent.exists():
            if not parent.is_dir():
                raise SelfvosInputError(dst, f"{option} lies below {parent}, which is not a folder")
            break
    if dst.is_dir():
        others = sorted(p.name for p in dst.iterdir() if not p.name.startswith(".")
                        and not (p.suffix.lower() == ".png" and p.is_file()))
        if others:
            raise SelfvosInputError(dst, f"{option} already holds {others[0]!r}"
                                         f"{f' and {len(others) - 1} more' if len(others) > 1 else ''}, "
                                         "not only masks; it is replaced as a whole, so pick a new or empty folder")


def fit_max_side(frame: np.ndarray, mask: Optional[np.ndarray], max_side: Optional[int]):
    """Shrink so that max(H, W) <= max_side, keeping the aspect ratio (never enlarges).

    frame (H, W, 3) uint8 -> PIL bilinear (antialiased when shrinking); mask (H, W) uint8 ids -> nearest,
    so no new ids appear. Returns ``(frame, mask)``; ``mask`` may be None.
    """
    h, w = frame.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return frame, mask
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # PIL wants (W, H)
    frame = np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR))
    if mask is not None:
        mask = np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST))
    return frame, mask


def commit_staged(staged: Path, dst: Path, *, overwrite: bool) -> None:
    """Rename a finished ``staged`` tree to ``dst``; with ``overwrite`` an old ``dst`` is replaced only
    after the new one is complete."""
    if dst.exists() and not overwrite:
        raise SelfvosInputError(dst, "already exists (pass overwrite=True / --overwrite to replace it)")
    replace_dir(staged, dst)


def export_davis(
    collection: VideoCollection,
    dst: PathLike,
    layout: str = "davis2017",
    *,
    max_side: Optional[int] = None,
    jpeg_quality: int = 95,
    overwrite: bool = False,
) -> Path:
    """Write every video of ``collection`` as DAVIS folders under ``dst`` (atomic: all or nothing).

    Frames -> ``<frames dir>/<seq>/<frame name>.jpg`` (JPEG, ``jpeg_quality``); annotated frames' masks ->
    ``<annotations dir>/<seq>/<frame name>.png`` (DAVIS palette, ids unchanged). ``layout`` picks the folder
    names (:data:`LAYOUTS`). Also writes ``ImageSets/all.txt`` with the sequence names. Returns ``dst``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown DAVIS layout {layout!r}; known: {sorted(LAYOUTS)}")
    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise SelfvosInputError(dst, "already exists (pass overwrite=True / --overwrite to replace it)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    staged = staging_path(dst)
    frames_dir, masks_dir = LAYOUTS[layout]
    try:
        for video in collection:
            seq_frames = staged / frames_dir / video.name
            seq_frames.mkdir(parents=True)
            annotated = set(video.annotated_indices()) if video.has_masks else set()
            if annotated:
                (staged / masks_dir / video.name).mkdir(parents=True)
            for i, frame_name in enumerate(video.frame_names):
                mask = video.mask(i) if i in annotated else None
                frame, mask = fit_max_side(video.frame(i), mask, max_side)
                Image.fromarray(frame).save(seq_frames / f"{frame_name}.jpg", quality=jpeg_quality)
                if mask is not None:
                    (staged / masks_dir / video.name / f"{frame_name}.png").write_bytes(encode_palette_png(mask))
        (staged / "ImageSets").mkdir(parents=True, exist_ok=True)
        (staged / "ImageSets" / "all.txt").write_text("".join(f"{n}\n" for n in collection.names))
        commit_staged(staged, dst, overwrite=overwrite)
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
    return dst
