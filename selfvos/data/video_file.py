"""Video files (mp4, mov, mkv, webm, avi) read lazily and seekably with PyAV.

A :class:`VideoFileVideo` never decodes the whole file: ``len()`` comes from the container's frame
count, or, when the container has none (mkv/webm) or a time range is asked for, from one packet-only
demux pass (no decoding). Frames are decoded on demand:
- sequential access keeps decoding forward from the current position (no restart per frame);
- random access seeks to the keyframe at or before the target and decodes forward from there;
- a small LRU cache keeps the last few returned frames.
Output frame ``i`` is raw frame ``first + i * frame_stride`` where ``first`` is the first frame at or
after ``start`` seconds; frames at or after ``end`` seconds are excluded. ``fps`` is the stream rate
divided by the stride; frame names are ``00000, 00001, ...`` over the output frames. ``max_side``
shrinks frames (never enlarges) so that the longer side is at most ``max_side``, keeping the aspect.
Container rotation metadata is not applied.

Reading frames is lenient (FFmpeg conceals small damage, as players do); :meth:`VideoFileVideo.verify` decodes
the whole file strictly (``err_detect=explode``) and names the frame where decoding fails, so a file with a
corrupt middle is reported as damaged by ``selfvos data inspect``.
"""
from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import av
import numpy as np

from selfvos.data.frames import natural_key
from selfvos.data.image_io import output_size
from selfvos.data.video import LazyVideo, VideoCollection
from selfvos.errors import SelfvosInputError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
_FORWARD_DECODE_LIMIT = 16  # below this many frames ahead, decoding forward beats a keyframe seek
_AV_ERRORS = (av.FFmpegError, OSError, UnicodeDecodeError)  # what PyAV raises on damaged data


@dataclass(frozen=True)
class PacketIndex:
    """Timestamps of every frame of a video stream, from demuxed packets (nothing decoded).

    ``pts``: (N,) int64 presentation timestamps in presentation order (stream time base);
    ``seconds``: (N,) float64 time of each frame since the stream start;
    ``keyframes``: sorted positions (into ``pts``) of keyframes.
    """

    pts: np.ndarray
    seconds: np.ndarray
    keyframes: np.ndarray

    def range_of(self, start: Optional[float], end: Optional[float]) -> Tuple[int, int]:
        """[first, stop) positions of the frames with start <= time < end (1 microsecond tolerance)."""
        first = 0 if start is None else int(np.searchsorted(self.seconds, start - 1e-6, side="left"))
        stop = len(self.pts) if end is None else int(np.searchsorted(self.seconds, end - 1e-6, side="left"))
        return first, max(first, stop)

    def has_keyframe_in(self, low: int, high: int) -> bool:
        """Whether a keyframe lies at a position in [low, high]."""
        k = int(np.searchsorted(self.keyframes, low, side="left"))
        return k < len(self.keyframes) and int(self.keyframes[k]) <= high

    def position_of(self, pts: int) -> int:
        """Position of the frame with timestamp ``pts`` (the next one if not exact)."""
        return bisect.bisect_left(self.pts, pts)


def build_packet_index(path: Path) -> PacketIndex:
    """One packet-only demux pass over the first video stream (fast: no frame is decoded)."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stamps, keys = [], []
            for packet in container.demux(stream):
                stamp = packet.pts if packet.pts is not None else packet.dts
                if packet.size == 0 or stamp is None:
                    continue  # flush packet, or a packet without timing
                stamps.append(stamp)
                keys.append(packet.is_keyframe)
            time_base = float(stream.time_base)
            origin = stream.start_time
    except _AV_ERRORS as err:
        raise SelfvosInputError(path, f"cannot index video packets (truncated or corrupt file?): {err}") from None
    order = np.argsort(np.asarray(stamps, dtype=np.int64), kind="stable")
    pts = np.asarray(stamps, dtype=np.int64)[order]
    keyframes = np.flatnonzero(np.asarray(keys, dtype=bool)[order])
    origin = int(pts[0]) if origin is None and len(pts) else (origin or 0)
    return PacketIndex(pts=pts, seconds=(pts - origin) * time_base, keyframes=keyframes)


class VideoFileVideo(LazyVideo):
    """One video file decoded on demand; see the module docstring for indexing rules."""

    def __init__(
        self,
        path: Union[str, Path],
        *,
        frame_stride: int = 1,
        max_side: Optional[int] = None,
        start: Optional[float] = None,
        end: Optional[float] = None,
        cache_size: int = 8,
    ) -> None:
        self.path = Path(path)
        if frame_stride < 1:
            raise SelfvosInputError(self.path, f"frame_stride must be >= 1, got {frame_stride}")
        if start is not None and end is not None and end <= start:
            raise SelfvosInputError(self.path, f"empty time range: end {end} <= start {start}")
        self.name, self.source = self.path.stem, str(self.path)
        self.frame_stride, self.start, self.end, self.cache_size = frame_stride, start, end, cache_size
        container = self._open()
        try:
            stream = container.streams.video[0]
            if stream.codec_context is None:
                raise SelfvosInputError(self.path, "video stream has no decoder (damaged header or unsupported codec)")
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            self.native_fps = float(rate) if rate and math.isfinite(float(rate)) and float(rate) > 0 else None
            self.fps = self.native_fps / frame_stride if self.native_fps else None
            self.native_size = (stream.codec_context.width, stream.codec_context.height)
            metadata_frames = int(stream.frames or 0)
        finally:
            container.close()
        if min(self.native_size) < 1:
            raise SelfvosInputError(self.path, f"video stream has no picture size ({self.native_size[0]}x"
                                               f"{self.native_size[1]}): damaged header or unsupported codec")
        self.size_wh = output_size(*self.native_size, max_side)
        self._index: Optional[PacketIndex] = None
        if metadata_frames > 0 and start is None and end is None:
            self._first, self._raw_count = 0, metadata_frames
        else:
            index = self._packet_index()
            self._first, stop = index.range_of(start, end)
            self._raw_count = stop - self._first
        if self._raw_count <= 0:
            where = f" between {start}s and {end}s" if start is not None or end is not None else ""
            raise SelfvosInputError(self.path, f"no video frames{where}")
        self._count = math.ceil(self._raw_count / frame_stride)
        self._names = [f"{i:05d}" for i in range(self._count)]
        self._reset_decoder()

    # -- state ---------------------------------------------------------------------------------
    def _open(self) -> "av.container.InputContainer":
        if not self.path.is_file():
            raise SelfvosInputError(self.path, "video file not found")
        try:
            container = av.open(str(self.path))
        except _AV_ERRORS as err:
            raise SelfvosInputError(self.path, f"cannot open video (truncated or not a video file?): {err}") from None
        if not container.streams.video:
            container.close()
            raise SelfvosInputError(self.path, "file has no video stream")
        return container

    def _reset_decoder(self) -> None:
        self._container = None
        self._decoded = None  # iterator over decoded frames
        self._pos = -1  # raw index of the last decoded frame
        self._cache: "OrderedDict[int, np.ndarray]" = OrderedDict()

    def close(self) -> None:
        """Release the open file (it is reopened on the next read)."""
        if self._container is not None:
            self._container.close()
        self._reset_decoder()

    def __getstate__(self) -> dict:  # picklable for DataLoader workers: drop the open decoder
        state = dict(self.__dict__)
        state.update(_container=None, _decoded=None, _pos=-1, _cache=OrderedDict())
        return state

    def verify(self) -> None:
        """Decode every frame of the file once, strictly: a damaged packet is an error here instead of a concealed
        picture. Raises ``SelfvosInputError`` naming the file and the frame (and time) where decoding failed, or
        how many frames are missing when the stream ends early."""
        expected = self._first + self._raw_count
        decoded = 0
        container = self._open()
        try:
            stream = container.streams.video[0]
            stream.codec_context.options = {"err_detect": "explode"}
            for _ in container.decode(stream):
                decoded += 1
        except _AV_ERRORS as err:
            raise SelfvosInputError(self.path, f"damaged video: decoding failed at frame {decoded} "
                                               f"({self._time_of(decoded)}) of {expected}: {err}") from None
        finally:
            container.close()
        if decoded < expected:
            raise SelfvosInputError(self.path, f"damaged video: the stream ends after {decoded} of {expected} frames "
                                               f"({self._time_of(decoded)}; truncated file?)")

    def _time_of(self, raw: int) -> str:
        """``"at 1.25 s"`` for raw frame ``raw`` when the frame rate is known, else ``"time unknown"``."""
        return f"at {raw / self.native_fps:.2f} s" if self.native_fps else "time unknown"

    def _packet_index(self) -> PacketIndex:
        if self._index is None:
            self._index = build_packet_index(self.path)
        return self._index

    # -- LazyVideo -----------------------------------------------------------------------------
    @property
    def frame_names(self) -> List[str]:
        return list(self._names)

    def __len__(self) -> int:
        return self._count

    def raw_index(self, index: int) -> int:
        """Index into the file's frames of output frame ``index``."""
        return self._first + index * self.frame_stride

    def _read_frame(self, index: int) -> np.ndarray:
        raw = self.raw_index(index)
        if raw in self._cache:
            self._cache.move_to_end(raw)
            return self._cache[raw]
        frame = self._decode_to(raw)
        width, height = self.size_wh
        try:
            array = frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="AREA")
        except (*_AV_ERRORS, ValueError) as err:
            raise SelfvosInputError(self.path, f"frame {raw} cannot be converted to RGB: {err}") from None
        self._cache[raw] = array
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return array

    # -- decoding ------------------------------------------------------------------------------
    def _decode_to(self, raw: int) -> "av.VideoFrame":
        if self._container is None:
            self._container = self._open()
            self._decoded = self._container.decode(self._container.streams.video[0])
            self._pos = -1
        if self._needs_seek(raw):
            self._seek(raw)
        while True:
            try:
                frame = next(self._decoded)
            except StopIteration:
                last = self._pos
                self.close()
                raise SelfvosInputError(
                    self.path, f"frame {raw} could not be decoded: the stream ends after frame {last} (truncated file?)"
                ) from None
            except _AV_ERRORS as err:
                self.close()
                raise SelfvosInputError(self.path, f"corrupt video data near frame {raw}: {err}") from None
            self._pos = self._frame_position(frame)
            if self._pos == raw:
                return frame
            if self._pos > raw:
                raise SelfvosInputError(self.path, f"frame {raw} is missing from the decoded stream")

    def _needs_seek(self, raw: int) -> bool:
        """Seek unless ``raw`` is a few frames ahead, or ahead with no keyframe in between
        (then a seek would land at or before the current position anyway)."""
        if raw <= self._pos:
            return True
        if raw <= self._pos + _FORWARD_DECODE_LIMIT:
            return False
        return self._packet_index().has_keyframe_in(self._pos + 1, raw)

    def _seek(self, raw: int) -> None:
        index = self._packet_index()
        stream = self._container.streams.video[0]
        if raw >= len(index.pts):
            self.close()
            raise SelfvosInputError(
                self.path, f"frame {raw} is not in the file: it holds {len(index.pts)} frames (truncated?)"
            )
        try:
            self._container.seek(int(index.pts[raw]), stream=stream, backward=True, any_frame=False)
        except _AV_ERRORS as err:
            self.close()
            raise SelfvosInputError(self.path, f"cannot seek to frame {raw}: {err}") from None
        self._decoded = self._container.decode(stream)
        self._pos = -1

    def _frame_position(self, frame: "av.VideoFrame") -> int:
        """Raw index of a decoded frame: from its timestamp when indexed, else by counting."""
        if self._index is not None and frame.pts is not None:
            return self._index.position_of(frame.pts)
        return self._pos + 1


def is_video_file(path: Union[str, Path]) -> bool:
    path = Path(path)
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS


def open_video(
    path: Union[str, Path],
    *,
    sequences: Optional[Sequence[str]] = None,
    frame_stride: int = 1,
    max_side: Optional[int] = None,
    start: Optional[float] = None,
    end: Optional[float] = None,
    cache_size: int = 8,
) -> VideoCollection:
    """One video file -> a one-video collection; a folder of video files -> one video per file."""
    path = Path(path)
    opts = dict(frame_stride=frame_stride, max_side=max_side, start=start, end=end, cache_size=cache_size)
    if path.is_file():
        return VideoCollection([VideoFileVideo(path, **opts)], source=str(path), kind="video")
    if not path.is_dir():
        raise SelfvosInputError(path, "no such video file or folder")
    files = sorted((p for p in path.iterdir() if is_video_file(p)), key=lambda p: natural_key(p.name))
    if not files:
        raise SelfvosInputError(path, f"empty folder: no video files ({', '.join(VIDEO_EXTENSIONS)})")
    if sequences:
        by_stem = {p.stem: p for p in files}
        unknown = [s for s in sequences if s not in by_stem]
        if unknown:
            raise SelfvosInputError(path, f"no video(s) {unknown}; available: {sorted(by_stem)}")
        files = [by_stem[s] for s in sequences]
    return VideoCollection([VideoFileVideo(p, **opts) for p in files], source=str(path), kind="video")
