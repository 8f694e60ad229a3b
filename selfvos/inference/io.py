"""Writing segmentation results: palette-PNG masks, overlays (colour blend + contours) and overlay videos.

- :func:`write_masks`: one DAVIS-palette PNG per frame, ``out_dir/<frame name>.png`` (ids stored as-is, so
  ``selfvos evaluate`` reads them back unchanged; written atomically by ``save_palette_png``).
- :func:`render_overlay`: frame (H, W, 3) + ids (H, W) -> (H, W, 3): each object blended with its DAVIS
  palette colour (``alpha``) and outlined with a ``cv2.drawContours`` contour in the same colour.
- :class:`OverlayVideoWriter`: an H.264 (``libx264`` when PyAV has it, else ``mpeg4``) ``yuv420p`` video;
  frames are padded to even width/height (yuv420p needs them) and the file is written under a temporary
  name and renamed on :meth:`~OverlayVideoWriter.close`, so the target is either absent or complete.
"""
from __future__ import annotations

import os
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

import cv2
import numpy as np

from selfvos.data.writers import DAVIS_PALETTE, save_palette_png
from selfvos.errors import PathLike, SelfvosInputError

PREFERRED_CODECS = ("libx264", "mpeg4")


def write_masks(out_dir: PathLike, frame_names: Sequence[str], masks: Iterable[np.ndarray]) -> List[Path]:
    """Write ``out_dir/<name>.png`` for each (H, W) uint8 id mask; returns the paths (one per frame name).

    ``masks`` may be a lazy iterator (e.g. a segmenter's output); it must yield exactly one mask per name.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: List[Path] = []
    names = list(frame_names)
    for k, mask in enumerate(masks):
        if k >= len(names):
            raise ValueError(f"{out_dir}: more masks than the {len(names)} frame names")
        paths.append(save_palette_png(out_dir / f"{names[k]}.png", np.asarray(mask, dtype=np.uint8)))
    if len(paths) != len(names):
        raise ValueError(f"{out_dir}: {len(paths)} masks for {len(names)} frame names")
    return paths


def render_overlay(frame: np.ndarray, mask: np.ndarray, alpha: float = 0.5, contour_thickness: int = 2,
                   palette: np.ndarray = DAVIS_PALETTE) -> np.ndarray:
    """Blend object colours into ``frame`` and draw each object's contour.

    frame (H, W, 3) uint8 RGB, mask (H, W) uint8 ids (0 = background, 255 = void, both left untouched)
    -> (H, W, 3) uint8: inside object k, ``(1 - alpha) * frame + alpha * palette[k]``; contours in
    ``palette[k]`` with ``contour_thickness`` px (0 = no contours).
    """
    frame = np.asarray(frame, dtype=np.uint8)
    mask = np.asarray(mask)
    if mask.shape != frame.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match frame {frame.shape[:2]}")
    out = frame.astype(np.float32)
    ids = [int(i) for i in np.unique(mask) if i not in (0, 255)]
    for object_id in ids:
        inside = mask == object_id
        out[inside] = (1 - alpha) * out[inside] + alpha * palette[object_id].astype(np.float32)
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if contour_thickness > 0:
        for object_id in ids:
            binary = (mask == object_id).astype(np.uint8)
            contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            colour = tuple(int(c) for c in palette[object_id])
            cv2.drawContours(out, contours, -1, colour, contour_thickness)
    return out


def pick_codec(preferred: Sequence[str] = PREFERRED_CODECS) -> str:
    """The first encoder in ``preferred`` that this PyAV build has."""
    import av

    for name in preferred:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # av raises UnknownCodecError (a ValueError subclass) for a missing encoder
            continue
    raise RuntimeError(f"PyAV has none of the video encoders {list(preferred)}")


def pad_to_even(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (H + H % 2, W + W % 2, 3), repeating the last row/column (yuv420p needs even sizes)."""
    pad_h, pad_w = image.shape[0] % 2, image.shape[1] % 2
    if not (pad_h or pad_w):
        return image
    return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")


class OverlayVideoWriter:
    """Write RGB frames (optionally with masks rendered on top) to a video file, atomically.

    >>> with OverlayVideoWriter("out.mp4", fps=24) as writer:
    ...     for frame, mask in zip(frames, masks):
    ...         writer.write(frame, mask)

    The file appears at ``path`` only when the writer closes without an exception.
    """

    def __init__(self, path: PathLike, fps: Optional[float] = 24.0, codec: Optional[str] = None,
                 alpha: float = 0.5, contour_thickness: int = 2) -> None:
        self.path = Path(path)
        if not self.path.suffix:
            raise SelfvosInputError(self.path, "overlay video needs a file extension such as .mp4")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = Fraction(fps if fps and fps > 0 else 24.0).limit_denominator(1001)
        self.codec = codec or pick_codec()
        self.alpha, self.contour_thickness = alpha, contour_thickness
        self._tmp = self.path.with_name(f".{self.path.stem}.tmp-{uuid.uuid4().hex[:8]}{self.path.suffix}")
        self._container = None
        self._stream = None
        self._size: Optional[tuple] = None
        self.frames_written = 0

    def write(self, frame: np.ndarray, mask: Optional[np.ndarray] = None) -> None:
        """Append one (H, W, 3) uint8 RGB frame, with ``mask`` (H, W) ids rendered on it when given."""
        import av

        image = render_overlay(frame, mask, self.alpha, self.contour_thickness) if mask is not None else frame
        image = pad_to_even(np.ascontiguousarray(image, dtype=np.uint8))
        if self._container is None:
            self._container = av.open(str(self._tmp), mode="w")
            self._stream = self._container.add_stream(self.codec, rate=self.fps)
            self._stream.height, self._stream.width = image.shape[:2]
            self._stream.pix_fmt = "yuv420p"
            self._size = image.shape[:2]
        elif image.shape[:2] != self._size:
            raise ValueError(f"{self.path}: frame size {image.shape[:2]} differs from the first frame's {self._size}")
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> Path:
        """Flush the encoder and move the finished file to ``path``."""
        if self._container is None:
            raise ValueError(f"{self.path}: no frames were written")
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        self._container = None
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial file; ``path`` is left as it was."""
        if self._container is not None:
            self._container.close()
            self._container = None
        if self._tmp.exists():
            self._tmp.unlink()

    def __enter__(self) -> "OverlayVideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_overlay_video(path: PathLike, frames: Iterable[np.ndarray], masks: Iterable[Optional[np.ndarray]],
                        fps: Optional[float] = 24.0, codec: Optional[str] = None) -> Path:
    """Render every (frame, mask) pair into one video at ``path`` (atomic); returns the path."""
    with OverlayVideoWriter(path, fps=fps, codec=codec) as writer:
        for frame, mask in zip(frames, masks):
            writer.write(frame, mask)
    return writer.path
