"""Checked image reading: RGB frames and object-id masks, with one clear error per bad file.

Mask conventions (what the readers hand on as ``(H, W) uint8`` ids):
- palette PNG (mode ``P``, DAVIS-2017 / YouTube-VOS): the palette index *is* the object id,
  0 = background, 255 = void; ids are preserved (``schoolgirls`` keeps 0..7).
- grayscale PNG (mode ``L``) holding only {0, 255} (DAVIS-2016 as shipped): foreground = value > 0,
  so it becomes ids {0, 1}. Any other grayscale PNG is read as raw ids.
- 1-bit PNG (mode ``1``): ids {0, 1}.
- RGB / RGBA / 16-bit masks are rejected: colours are not ids (convert to a palette PNG first).
- the file must hold PNG data: a JPEG (lossy: ids change at every edge), GIF, BMP, ... named ``.png`` is rejected.

Every failure to read a file (missing, not an image, truncated, corrupt, too large to decode safely, a mode that
cannot become RGB) is one :class:`~selfvos.errors.SelfvosInputError` naming the file.

``binary=True`` maps every object id > 0 to 1; void (255 in palette masks) stays void.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Tuple, Union

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from selfvos.data.video import VOID
from selfvos.errors import SelfvosInputError

PathLike = Union[str, "os.PathLike[str]"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_MASK_MODES = ("P", "L", "1")


def _open_checked(path: PathLike) -> Image.Image:
    """Open and fully decode an image, turning every PIL failure into a SelfvosInputError."""
    path = Path(path)
    if not path.is_file():
        raise SelfvosInputError(path, "file not found")
    try:
        image = Image.open(path)
        image.load()  # PIL decodes lazily: truncated/corrupt data only fails here
    except UnidentifiedImageError:
        raise SelfvosInputError(path, "not a readable image (corrupt, truncated or unknown format)") from None
    except Image.DecompressionBombError as err:
        raise SelfvosInputError(path, f"image too large to decode safely ({err})") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as err:
        raise SelfvosInputError(path, f"corrupt or truncated image ({err})") from None
    _check_not_empty(image, path)
    return image


def _check_not_empty(image: Image.Image, path: PathLike) -> None:
    """Raise for an image with a zero width or height (a header PIL accepts but nothing can use)."""
    width, height = image.size
    if width < 1 or height < 1:
        raise SelfvosInputError(path, f"image has no pixels ({width}x{height})")


def image_size(path: PathLike) -> Tuple[int, int]:
    """(H, W) from the file header only (no pixel decoding)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            _check_not_empty(image, path)
    except FileNotFoundError:
        raise SelfvosInputError(path, "file not found") from None
    except Image.DecompressionBombError as err:
        raise SelfvosInputError(path, f"image too large to decode safely ({err})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise SelfvosInputError(path, f"not a readable image ({err})") from None
    return height, width


def read_rgb(path: PathLike) -> np.ndarray:
    """Read a JPEG/PNG frame as (H, W, 3) uint8 RGB (grayscale, palette and RGBA are converted)."""
    image = _open_checked(path)
    if image.mode != "RGB":
        if image.mode.startswith(("I", "F")):
            raise SelfvosInputError(path, f"unsupported frame mode {image.mode!r} (expected 8-bit RGB or grayscale)")
        try:
            image = image.convert("RGB")
        except (OSError, ValueError) as err:
            raise SelfvosInputError(path, f"cannot convert a {image.mode!r} frame to RGB ({err})") from None
    return np.asarray(image, dtype=np.uint8).copy()


def read_mask(path: PathLike, *, binary: bool = False) -> np.ndarray:
    """Read an annotation PNG as (H, W) uint8 object ids (see the module docstring for the rules)."""
    image = _open_checked(path)
    if image.format != "PNG":
        raise SelfvosInputError(path, f"not a PNG file (it holds {image.format or 'unknown'} image data); masks "
                                      "must be PNG (a lossy format changes the ids at every edge)")
    if image.mode not in _MASK_MODES:
        raise SelfvosInputError(
            path,
            f"mask has mode {image.mode!r}; expected a palette (P) or grayscale (L) PNG of object ids "
            "(an RGB colour mask must be converted to a palette PNG first)",
        )
    ids = np.asarray(image, dtype=np.uint8).copy()
    void_is_value = image.mode == "P"
    if image.mode == "L":
        values = np.unique(ids)
        if values.size and set(values.tolist()) <= {0, 255}:
            ids = (ids > 0).astype(np.uint8)  # DAVIS-2016 0/255 ground truth
    if binary:
        keep_void = void_is_value & (ids == VOID)
        ids = np.where(keep_void, VOID, ids > 0).astype(np.uint8)
    return ids


def output_size(width: int, height: int, max_side: Optional[int]) -> Tuple[int, int]:
    """(W, H) after shrinking so that max(W, H) <= max_side (aspect kept, never enlarged)."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def shrink_frame(frame: np.ndarray, max_side: Optional[int]) -> np.ndarray:
    """(H, W, 3) -> area-averaged (h, w, 3) with max(h, w) <= max_side."""
    size = output_size(frame.shape[1], frame.shape[0], max_side)
    return frame if size == (frame.shape[1], frame.shape[0]) else cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def shrink_mask(mask: np.ndarray, max_side: Optional[int]) -> np.ndarray:
    """(H, W) ids -> nearest-neighbour (h, w) ids (ids are labels: never interpolated)."""
    size = output_size(mask.shape[1], mask.shape[0], max_side)
    return mask if size == (mask.shape[1], mask.shape[0]) else cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)


def check_mask_matches_frame(mask: np.ndarray, mask_path: PathLike, frame_path: PathLike) -> None:
    """Raise when a mask and its frame differ in size (checked against the frame's header)."""
    frame_hw = image_size(frame_path)
    if tuple(mask.shape[:2]) != tuple(frame_hw):
        raise SelfvosInputError(
            mask_path,
            f"mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but frame {Path(frame_path).name} is "
            f"{frame_hw[1]}x{frame_hw[0]}",
        )
