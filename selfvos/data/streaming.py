"""Videos read shard by shard, never listed or decoded whole: the ``stream:`` source.

``stream:LOCATION`` opens the shards at LOCATION (:func:`selfvos.data.shards.list_shards`: a folder written by
``selfvos shard``, or a folder / glob / file of tar archives and video files) as a :class:`VideoShards`
collection. Memory: opening reads ``index.json`` only. A video is a :class:`ShardVideo`, a proxy of a few numbers,
until a frame is read; then its bytes are copied to a temporary file and decoded lazily by
:class:`~selfvos.data.video_file.VideoFileVideo`. :class:`OpenVideos` keeps at most ``open_limit`` decoders open
(least recently used closed first, its temporary file deleted) and counts ``opened`` and ``peak``.
``collection.names`` / ``collection[name]`` (what pseudo-labeling uses) read every listing once: the names of all
videos in memory, no frame. Training clips come from :class:`selfvos.data.clip_stream.ClipStream`.
"""
from __future__ import annotations

import bisect
import math
import os
import shutil
import tempfile
from collections import OrderedDict
from multiprocessing.util import Finalize
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from selfvos.data.shards import Shard, ShardEntry, list_shards
from selfvos.data.video import LazyVideo, VideoCollection
from selfvos.data.video_file import VideoFileVideo
from selfvos.errors import PathLike, SelfvosInputError
from selfvos.registry import SOURCES


class OpenVideos:
    """The decoders of at most ``limit`` videos, least recently used closed first; ``options`` go to
    :class:`VideoFileVideo` (``max_side``, ``frame_stride``). ``opened``: videos opened so far; ``peak``: most
    open at once. A copy (pickle, e.g. for a DataLoader worker) starts empty."""

    def __init__(self, limit: int = 8, **options: Any) -> None:
        if limit < 1:
            raise ValueError(f"open limit must be >= 1, got {limit}")
        self.limit, self.options = int(limit), dict(options)
        self._open: "OrderedDict[Tuple[str, str], Tuple[VideoFileVideo, Optional[Path]]]" = OrderedDict()
        self._tmp: Optional[Path] = None
        self.opened = self.peak = 0

    def __len__(self) -> int:
        return len(self._open)

    def __getstate__(self) -> Dict[str, Any]:
        return {"limit": self.limit, "options": self.options}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__init__(state["limit"], **state["options"])

    def get(self, video: "ShardVideo") -> VideoFileVideo:
        """The open decoder of ``video`` (opened now when it is not)."""
        if video.key in self._open:
            self._open.move_to_end(video.key)
            return self._open[video.key][0]
        while len(self._open) >= self.limit:
            self._close(next(iter(self._open)))
        temp = self._extract(video) if video.shard.kind == "tar" else None
        try:
            decoder = VideoFileVideo(temp or video.shard.path, **self.options)
        except SelfvosInputError as err:
            if temp is not None:
                temp.unlink(missing_ok=True)
            raise SelfvosInputError(video.source, err.problem) from None
        self._open[video.key] = (decoder, temp)
        self.opened += 1
        self.peak = max(self.peak, len(self._open))
        return decoder

    def release(self, key: Tuple[str, str]) -> None:
        if key in self._open:
            self._close(key)

    def close(self) -> None:
        """Close every decoder and delete the temporary files."""
        for key in list(self._open):
            self._close(key)

    def _close(self, key: Tuple[str, str]) -> None:
        decoder, temp = self._open.pop(key)
        decoder.close()
        if temp is not None:
            temp.unlink(missing_ok=True)

    def _extract(self, video: "ShardVideo") -> Path:
        """Copy the member's bytes to a temporary file (PyAV seeks in it; the archive stays untouched)."""
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="selfvos-stream-"))
            # removed when this object is freed or this process exits (a DataLoader worker too), never by a fork
            Finalize(self, shutil.rmtree, args=(str(self._tmp),), kwargs={"ignore_errors": True}, exitpriority=0)
        entry, shard = video.entry, video.shard.path
        target = self._tmp / f"{self.opened:08d}{Path(entry.member).suffix.lower()}"
        left = entry.size
        try:
            with open(shard, "rb") as src, open(target, "wb") as dst:
                src.seek(entry.offset)
                while left:
                    block = src.read(min(left, 1 << 20))
                    if not block:
                        break
                    dst.write(block)
                    left -= len(block)
        except OSError as err:
            target.unlink(missing_ok=True)
            raise SelfvosInputError(shard, f"cannot read member {entry.member}: {err}") from None
        if left:
            target.unlink(missing_ok=True)
            raise SelfvosInputError(shard, f"truncated shard: member {entry.member} needs bytes up to "
                                           f"{entry.offset + entry.size}, the file has {shard.stat().st_size}")
        return target


class ShardVideo(LazyVideo):
    """One video of a shard, opened (through ``decoders``) when its length or a frame is first needed;
    errors name the shard and member (``source`` = ``"<shard>[<member>]"``)."""

    def __init__(self, shard: Shard, entry: ShardEntry, decoders: OpenVideos) -> None:
        self.shard, self.entry, self.decoders = shard, entry, decoders
        self.name = entry.name
        self.source = str(shard.path) if shard.kind == "video" else f"{shard.path}[{entry.member}]"
        stride = int(decoders.options.get("frame_stride", 1))
        self.fps = None if entry.fps is None else entry.fps / stride
        self._count = None if entry.frames is None else math.ceil(entry.frames / stride)

    @property
    def key(self) -> Tuple[str, str]:
        return str(self.shard.path), self.entry.member

    def decoder(self) -> VideoFileVideo:
        decoder = self.decoders.get(self)
        self.fps = decoder.fps
        return decoder

    def __len__(self) -> int:
        if self._count is None:
            self._count = len(self.decoder())
        return self._count

    @property
    def frame_names(self) -> List[str]:
        return [f"{i:05d}" for i in range(len(self))]

    def _read_frame(self, index: int) -> np.ndarray:
        try:
            return self.decoder().frame(index)
        except SelfvosInputError as err:
            if err.path in (self.source, str(self.shard.path)):
                raise
            raise SelfvosInputError(self.source, err.problem) from None

    def verify(self) -> None:
        try:
            self.decoder().verify()
        except SelfvosInputError as err:
            raise SelfvosInputError(self.source, err.problem) from None

    def close(self) -> None:
        """Close the decoder and delete the temporary copy (reopened on the next read)."""
        self.decoders.release(self.key)


class VideoShards(VideoCollection):
    """The videos of ``shards`` in shard order (``kind="stream"``), iterated shard by shard as lazy
    :class:`ShardVideo` proxies. ``len`` comes from the shard counts; ``names`` and ``collection[name]`` read
    every listing once."""

    def __init__(self, shards: Sequence[Shard], *, source: str = "", max_side: Optional[int] = None,
                 frame_stride: int = 1, open_limit: int = 8) -> None:
        if not shards:
            raise SelfvosInputError(source or "stream", "no shards")
        self.shards, self.source, self.kind = list(shards), source, "stream"
        self.decoders = OpenVideos(open_limit, max_side=max_side, frame_stride=frame_stride)
        self._where: Optional[Dict[str, Tuple[int, int]]] = None
        self._starts: Optional[List[int]] = None
        self._listings: "OrderedDict[int, List[ShardEntry]]" = OrderedDict()

    def __len__(self) -> int:
        return self.first_video(len(self.shards))

    def first_video(self, shard_index: int) -> int:
        """Position in the collection of shard ``shard_index``'s first video (the total for ``len(shards)``)."""
        if self._starts is None:
            self._starts = [0, *np.cumsum([s.count for s in self.shards]).tolist()]
        return self._starts[shard_index]

    def entries(self, shard_index: int) -> List[ShardEntry]:
        """Listing of one shard (the last few are kept)."""
        if shard_index not in self._listings:
            self._listings[shard_index] = self.shards[shard_index].entries()
            while len(self._listings) > 4:
                self._listings.popitem(last=False)
        self._listings.move_to_end(shard_index)
        return self._listings[shard_index]

    def video(self, shard_index: int, position: int, decoders: Optional[OpenVideos] = None) -> ShardVideo:
        """Video ``position`` of shard ``shard_index``'s listing, decoded through ``decoders`` (default: the
        collection's own)."""
        decoders = self.decoders if decoders is None else decoders
        return ShardVideo(self.shards[shard_index], self.entries(shard_index)[position], decoders)

    def __iter__(self) -> Iterator[LazyVideo]:
        for shard in self.shards:
            for entry in shard.entries():
                yield ShardVideo(shard, entry, self.decoders)

    def _locations(self) -> Dict[str, Tuple[int, int]]:
        if self._where is None:
            where: Dict[str, Tuple[int, int]] = {}
            for i, shard in enumerate(self.shards):
                for j, entry in enumerate(shard.entries()):
                    if entry.name in where:
                        first = self.shards[where[entry.name][0]].path
                        raise SelfvosInputError(self.source or shard.path, f"two videos named {entry.name!r} (in "
                                                f"{first} and {shard.path}); names must be unique")
                    where[entry.name] = (i, j)
            self._where = where
        return self._where

    @property
    def names(self) -> List[str]:
        return list(self._locations())

    def __getitem__(self, key: Union[int, str]) -> LazyVideo:
        if isinstance(key, int):
            total = len(self)
            if not -total <= key < total:
                raise IndexError(f"{self.source}: video {key} out of range for {total} videos")
            key %= total
            shard = bisect.bisect_right(self._starts, key) - 1
            return self.video(shard, key - self._starts[shard])
        if key not in self._locations():
            raise KeyError(f"{self.source}: no video {key!r}")
        return self.video(*self._where[key])

    def select(self, names: Optional[Sequence[str]]) -> VideoCollection:
        if not names:
            return self
        unknown = [n for n in names if n not in self._locations()]
        if unknown:
            raise SelfvosInputError(self.source or "--sequences", f"no video(s) {unknown} in the shards")
        return VideoCollection([self[n] for n in names], source=self.source, kind=self.kind)

    def close(self) -> None:
        self.decoders.close()

    def __repr__(self) -> str:
        return f"VideoShards(shards={len(self.shards)}, source={self.source!r})"


@SOURCES.register("stream")
def open_stream(location: PathLike, *, max_side: Optional[int] = None, frame_stride: int = 1, open_limit: int = 8,
                sequences: Optional[Sequence[str]] = None) -> VideoCollection:
    """``stream:LOCATION`` -> :class:`VideoShards` (``sequences``: a plain collection of just those videos)."""
    shards = list_shards(location)
    collection = VideoShards(shards, source=os.fspath(location), max_side=max_side, frame_stride=frame_stride,
                             open_limit=open_limit)
    return collection.select(sequences)
