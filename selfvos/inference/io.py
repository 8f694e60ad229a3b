"""Writing segmentation results: palette-PNG masks, overlays (colour blend + contours) and overlay videos.

- :func:`write_masks`: one DAVIS-palette PNG per frame, ``out_dir/<frame name>.png`` (ids stored as-is, so
  ``selfvos evaluate`` reads them back unchanged; written atomically by ``save_palette_png``).
  :func:`write_mask_folder` does the same all or nothing: the folder appears complete or not at all.
- :func:`render_overlay`: frame (H, W, 3) + ids (H, W) -> (H, W, 3): each object blended with its DAVIS
  palette colour (``alpha``) and outlined with a ``cv2.drawContours`` contour in the same colour.
- :class:`OverlayVideoWriter`: an H.264 (``libx264`` when PyAV has it, else ``mpeg4``) ``yuv420p`` video;
  frames are padded to even width/height (yuv420p needs them) and the file is written under a temporary
  name and renamed on :meth:`~OverlayVideoWriter.close`, so the target is either absent or complete.
  :func:`check_overlay_path` tells before any work whether the file name's container takes that codec
  (``.mp4``, ``.mkv``, ``.mov``, ``.avi``, ... yes; ``.gif``, ``.webm``, ``.png`` no) by encoding two frames of
  the real size and rate into a scratch file with PyAV.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
import uuid
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from selfvos.atomic import staged_folder
from selfvos.data.writers import DAVIS_PALETTE, save_palette_png
from selfvos.errors import PathLike, SelfvosInputError

log = logging.getLogger(__name__)
PREFERRED_CODECS = ("libx264", "mpeg4")
OVERLAY_CANDIDATES = (".mp4", ".mkv", ".mov", ".avi", ".m4v", ".ts", ".flv", ".3gp", ".wmv", ".webm", ".gif", ".ogv")
"""Extensions tried when an overlay path is refused, to list the ones that work in the message."""
NO_TIMESTAMPS = 0x0080  # AVFMT_NOTIMESTAMPS: raw streams (.h264, .yuv, image sequences), no frame timing


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


def write_mask_folder(out_dir: PathLike, frame_names: Sequence[str], masks: Iterable[np.ndarray]) -> List[Path]:
    """:func:`write_masks` all or nothing: the masks are written into a staging sibling of ``out_dir`` that
    replaces ``out_dir`` only once every mask is written; on any error ``out_dir`` is left as it was (see
    :func:`selfvos.atomic.staged_folder`). Returns the final paths."""
    out_dir = Path(out_dir)
    with staged_folder(out_dir) as staged:
        written = write_masks(staged, frame_names, masks)
    return [out_dir / p.name for p in written]


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


def _probe_encode(path: Path, codec: str, size: Tuple[int, int], fps: Fraction) -> Optional[str]:
    """Encode two black frames of ``size`` (H, W) at ``fps`` into a scratch file named like ``path``;
    None when that works, else why not."""
    import av

    height, width = size[0] + size[0] % 2, size[1] + size[1] % 2
    with tempfile.TemporaryDirectory(prefix="selfvos-probe-") as scratch:
        try:
            with av.open(os.path.join(scratch, f"probe{path.suffix}"), mode="w") as container:
                if container.format.flags & NO_TIMESTAMPS:
                    return f"the {container.format.long_name} muxer keeps no frame timing, which a video needs"
                stream = container.add_stream(codec, rate=fps)
                stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
                black = av.VideoFrame.from_ndarray(np.zeros((height, width, 3), np.uint8), format="rgb24")
                for frame in (black, black, None):
                    for packet in stream.encode(frame):
                        container.mux(packet)
        except (ValueError, OSError, av.FFmpegError) as err:  # what PyAV raises for a refused container/codec
            return str(err).replace(os.path.join(scratch, f"probe{path.suffix}"), path.name) or type(err).__name__
    return None


def overlay_extensions(codec: str) -> List[str]:
    """The extensions of :data:`OVERLAY_CANDIDATES` whose container PyAV can write ``codec`` into."""
    return [ext for ext in OVERLAY_CANDIDATES
            if _probe_encode(Path(f"x{ext}"), codec, (16, 16), Fraction(24)) is None]


def check_overlay_path(path: PathLike, size: Tuple[int, int] = (16, 16), fps: Optional[float] = 24.0,
                       codec: Optional[str] = None) -> None:
    """Raise ``SelfvosInputError`` unless an overlay video of ``size`` (H, W) frames at ``fps`` can be written
    to ``path``: it needs a file name whose container (by extension) takes the codec (PyAV is asked, by
    encoding two frames into a scratch file) and a place that is not a folder."""
    path = Path(path)
    if path.is_dir():
        raise SelfvosInputError(path, "--overlay is a folder; give a video file name such as overlay.mp4")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise SelfvosInputError(path, f"--overlay lies below {parent}, which is not a folder")
            break
    if not path.suffix:
        raise SelfvosInputError(path, "overlay video needs a file extension such as .mp4")
    codec = codec or pick_codec()
    problem = _probe_encode(path, codec, size, _rate(fps))
    if problem is not None:
        works = ", ".join(overlay_extensions(codec)) or "none"
        raise SelfvosInputError(path, f"cannot write a {path.suffix} overlay video with {codec} ({problem}); "
                                      f"use one of: {works}")


def _rate(fps: Optional[float]) -> Fraction:
    """A frame rate as PyAV wants it (24 when unknown or not positive)."""
    return Fraction(fps if fps and fps > 0 else 24.0).limit_denominator(1001)


def clean_stale_overlays(path: Path) -> None:
    """Delete the temporary files a killed :class:`OverlayVideoWriter` for ``path`` left next to it."""
    stale = re.compile(rf"^\.{re.escape(path.stem)}\.tmp-[0-9a-f]{{8}}{re.escape(path.suffix)}$")
    if path.parent.is_dir():
        for entry in path.parent.iterdir():
            if stale.match(entry.name) and entry.is_file():
                entry.unlink(missing_ok=True)


class OverlayVideoWriter:
    """Write RGB frames (optionally with masks rendered on top) to a video file, atomically.

    >>> with OverlayVideoWriter("out.mp4", fps=24) as writer:
    ...     for frame, mask in zip(frames, masks):
    ...         writer.write(frame, mask)

    The file appears at ``path`` only when the writer closes without an exception (:meth:`close`, or
    :meth:`finish` then :meth:`commit` to move it into place at a moment of the caller's choosing).
    Temporary files of an earlier writer of ``path`` that was killed are deleted when a new one starts.
    An ``OSError`` (a full disk) names ``path``.
    """

    def __init__(self, path: PathLike, fps: Optional[float] = 24.0, codec: Optional[str] = None,
                 alpha: float = 0.5, contour_thickness: int = 2) -> None:
        self.path = Path(path)
        if not self.path.suffix:
            raise SelfvosInputError(self.path, "overlay video needs a file extension such as .mp4")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_overlays(self.path)
        self.fps = _rate(fps)
        self.codec = codec or pick_codec()
        self.alpha, self.contour_thickness = alpha, contour_thickness
        self._tmp = self.path.with_name(f".{self.path.stem}.tmp-{uuid.uuid4().hex[:8]}{self.path.suffix}")
        self._container = None
        self._stream = None
        self._size: Optional[tuple] = None
        self._finished = False
        self.frames_written = 0

    @contextmanager
    def _naming_target(self) -> Iterator[None]:
        """An ``OSError`` about the temporary file (or about no file) is raised about ``path``."""
        try:
            yield
        except OSError as err:
            name = os.fspath(err.filename) if err.filename is not None else None
            if err.errno is None or name not in (None, os.fspath(self._tmp)):
                raise
            raise OSError(err.errno, err.strerror or os.strerror(err.errno), os.fspath(self.path)) from err

    def write(self, frame: np.ndarray, mask: Optional[np.ndarray] = None) -> None:
        """Append one (H, W, 3) uint8 RGB frame, with ``mask`` (H, W) ids rendered on it when given."""
        import av

        image = render_overlay(frame, mask, self.alpha, self.contour_thickness) if mask is not None else frame
        image = pad_to_even(np.ascontiguousarray(image, dtype=np.uint8))
        with self._naming_target():
            if self._container is None:
                self._container = av.open(str(self._tmp), mode="w")
                self._stream = self._container.add_stream(self.codec, rate=self.fps)
                self._stream.height, self._stream.width = image.shape[:2]
                self._stream.pix_fmt = "yuv420p"
                self._size = image.shape[:2]
            elif image.shape[:2] != self._size:
                raise SelfvosInputError(self.path, f"frame size {image.shape[:2]} differs from the first "
                                                   f"frame's {self._size}")
            for packet in self._stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                self._container.mux(packet)
        self.frames_written += 1

    def finish(self) -> None:
        """Flush the encoder and close the temporary file; :meth:`commit` moves it into place."""
        if self._container is None:
            raise ValueError(f"{self.path}: no frames were written")
        with self._naming_target():
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
        self._container = None
        self._finished = True

    def commit(self) -> Path:
        """Move the finished file to ``path`` (after :meth:`finish`); returns ``path``."""
        if not self._finished:
            raise ValueError(f"{self.path}: finish() the video before commit()")
        os.replace(self._tmp, self.path)
        self._finished = False
        return self.path

    def close(self) -> Path:
        """Flush the encoder and move the finished file to ``path``."""
        self.finish()
        return self.commit()

    def abort(self) -> None:
        """Drop the partial file; ``path`` is left as it was."""
        import av

        if self._container is not None:
            try:
                self._container.close()
            except (OSError, av.FFmpegError) as err:  # a full disk fails the close too; the file goes anyway
                log.debug("%s: closing the partial overlay failed (%s); deleting it", self.path, err)
            self._container = None
        self._finished = False
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "OverlayVideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
            return
        try:
            self.close()
        except BaseException:
            self.abort()
            raise


def write_overlay_video(path: PathLike, frames: Iterable[np.ndarray], masks: Iterable[Optional[np.ndarray]],
                        fps: Optional[float] = 24.0, codec: Optional[str] = None) -> Path:
    """Render every (frame, mask) pair into one video at ``path`` (atomic); returns the path."""
    with OverlayVideoWriter(path, fps=fps, codec=codec) as writer:
        for frame, mask in zip(frames, masks):
            writer.write(frame, mask)
    return writer.path


@contextmanager
def staged_outputs(out_dir: Path, overlay: Optional[str], fps: float) -> Iterator[tuple]:
    """``with staged_outputs(out_dir, overlay, fps) as (staged, writer):`` a staged folder that replaces
    ``out_dir`` once the block completes and an :class:`OverlayVideoWriter` (None without ``overlay``) whose video
    is finished inside the staging and moved into place right after; on any error both destinations are left as
    they were. Prints the overlay's path and codec when it is written."""
    writer = OverlayVideoWriter(overlay, fps=fps) if overlay else None
    try:
        with staged_folder(Path(out_dir)) as staged:
            yield staged, writer
            if writer is not None:
                writer.finish()
        if writer is not None:
            print(f"wrote overlay {writer.commit()} ({writer.codec})")
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
