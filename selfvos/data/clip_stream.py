"""Training clips streamed shard by shard from a ``stream:`` source: :class:`ClipStream`, a torch
``IterableDataset`` with per-rank sharding and a seeded order that resumes exactly.

One pass (epoch ``e``) on rank ``r`` of ``W`` (:meth:`ClipStream.set_rank`) is a function of (seed, e, r, W):

1. the shards are permuted with ``default_rng([seed, e])``; rank r reads, in that order, the shards whose index
   s (in the collection's shard order) has ``s % W == r`` — disjoint ranks that together hold every shard;
2. each shard's videos are permuted with ``default_rng([seed, e, s])``;
3. the rank's videos are cut into windows of ``buffer_videos``; the ``clips_per_video`` clips of a window's
   videos are permuted with ``default_rng([seed, e, r, window])`` (a shuffle buffer: batches mix videos, and only
   one window's videos are needed at a time);
4. the pass is cut to ``len = floor(min_r(videos_r) * clips_per_video / B) * B`` items, the same on every rank
   (B = batch size), so all ranks step together; a rank holding more videos drops a tail that differs per epoch.

Clip k of video g (g: the video's position in the collection of N videos) is item ``k * N + g`` of a
:class:`~selfvos.data.sampling.ClipDataset` over the same collection (which reads video ``index % N``): the same
tensors, drawn from ``SeedSequence([seed, e, k * N + g])`` whatever the rank, worker or position; a stream pass
holds the map-style epoch's items in another order.

DataLoader workers: batch j of a pass belongs to worker ``j % num_workers``, the order in which the DataLoader
collects batches, so the loader yields the same batches for any number of workers; every worker walks the
rank's order (shard counts only) and opens only the videos of its own items, at most ``buffer_videos`` at once
(:class:`~selfvos.data.streaming.OpenVideos`).

Decoding: a worker first decodes the frames its items of a window read (clip + references), each video in
increasing frame order, so H.264 is decoded forward once per video and window rather than from a keyframe for
every random access; memory per worker: at most ``buffer_videos * clips_per_video * (T + R)`` frames. The price
of the worker-independent order is that two workers may each decode the same video of a window.

Resume: :meth:`ClipStream.start_at` ``(b)`` makes the next pass start at batch b; the skipped items are counted,
not decoded, so a resumed run gets exactly the batches of an uninterrupted one. The trainer prepares the loader
with :func:`prepare_stream_loader` and calls ``start_at`` for every pass (:mod:`selfvos.engine.trainer`).
"""
from __future__ import annotations

import gc
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from selfvos.data.sampling import (
    ClipAugmenter, ClipDataset, ClipSamplerConfig, MaskProvider, SharedSkip, sample_clip_indices,
    sample_reference_indices,
)
from selfvos.data.streaming import OpenVideos, ShardVideo, VideoShards
from selfvos.data.video import LazyVideo, VideoCollection, VideoView
from selfvos.errors import SelfvosInputError

Item = Tuple[int, int, int]  # (shard index, position in the shard's listing, clip k)


class _VideoClips(ClipDataset):
    """:class:`ClipDataset`'s item code applied to one video at a time (``videos = [video]``, item index
    ``k * N + g``, ``video_index`` g); shares the stream's (epoch, max_skip) state."""

    def __init__(self, stream: "ClipStream") -> None:  # no ClipDataset.__init__: no collection, no new state
        self.collection, self.cfg = stream.shards, stream.cfg
        self.mask_provider, self.augment = stream.mask_provider, stream.augment
        self.clips_per_video = stream.clips_per_video
        self._state, self.videos, self.total = stream._state, [], len(stream.shards)

    def index(self, g: int, k: int) -> int:
        return k * self.total + g

    def __len__(self) -> int:
        return 1 << 62

    def clip(self, video: LazyVideo, g: int, k: int) -> Dict[str, torch.Tensor]:
        self.videos = [video]
        item = self[self.index(g, k)]
        item["video_index"] = torch.tensor(g, dtype=torch.int64)
        return item


class ClipStream(SharedSkip, IterableDataset):
    """Clips (the :mod:`selfvos.data.sampling` batch contract) from the videos of a :class:`VideoShards`
    collection, streamed in the order of the module docstring; ``rank`` / ``world_size`` / ``batch_size`` are
    normally set by :func:`prepare_stream_loader`."""

    def __init__(self, shards: VideoShards, cfg: ClipSamplerConfig, mask_provider: Optional[MaskProvider] = None,
                 augment: Optional[ClipAugmenter] = None, clips_per_video: int = 1, *, buffer_videos: int = 8,
                 rank: int = 0, world_size: int = 1, batch_size: int = 1) -> None:
        if not isinstance(shards, VideoShards):
            raise TypeError(f"ClipStream reads a stream: source (VideoShards), got {type(shards).__name__}")
        if clips_per_video < 1 or buffer_videos < 1:
            raise ValueError(f"need clips_per_video >= 1 and buffer_videos >= 1, got {clips_per_video} and "
                             f"{buffer_videos}")
        self.shards, self.cfg, self.mask_provider, self.augment = shards, cfg, mask_provider, augment
        self.clips_per_video, self.buffer_videos = clips_per_video, buffer_videos
        self._state = torch.tensor([0, cfg.max_skip, 0], dtype=torch.int64).share_memory_()  # epoch, max_skip, start
        self.decoders = OpenVideos(buffer_videos, **shards.decoders.options)
        self.prefetch_misses = 0  # frames read that were not decoded ahead (this process)
        self.set_rank(rank, world_size, batch_size)

    def set_rank(self, rank: int, world_size: int, batch_size: Optional[int] = None) -> None:
        """Read the shards of process ``rank`` of ``world_size``, in batches of ``batch_size`` (kept when None)."""
        count = len(self.shards.shards)
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank} of {world_size}")
        if world_size > count:
            raise SelfvosInputError(self.shards.source, f"{count} shard(s) for {world_size} processes: every process "
                                    "reads whole shards; write at least one shard per process (selfvos shard "
                                    "--videos-per-shard)")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.rank, self.world_size = int(rank), int(world_size)
        self.batch_size = int(batch_size) if batch_size is not None else getattr(self, "batch_size", 1)

    def rank_shards(self, rank: Optional[int] = None) -> List[int]:
        """Indices of the shards process ``rank`` (default: this one) reads: ``rank, rank + W, ...``."""
        return list(range(self.rank if rank is None else rank, len(self.shards.shards), self.world_size))

    def __len__(self) -> int:
        counts = [sum(self.shards.shards[s].count for s in self.rank_shards(r)) for r in range(self.world_size)]
        items = min(counts) * self.clips_per_video
        return items - items % self.batch_size

    @property
    def epoch(self) -> int:
        return int(self._state[0])

    def set_epoch(self, epoch: int) -> None:
        """Pass ``epoch`` next. In the main process it also frees the FFmpeg decoders closed so far (PyAV objects
        are reference cycles, freed by the garbage collector): the DataLoader forks its workers right after this
        call, and a worker freeing its copy of a decoder can hang."""
        self._state[0] = int(epoch)
        if get_worker_info() is None:
            gc.collect()

    @property
    def start_batch(self) -> int:
        return int(self._state[2])

    def start_at(self, batch: int) -> None:
        """Start every following pass at batch ``batch`` (0: from the beginning) until called again."""
        if batch < 0:
            raise ValueError(f"start batch must be >= 0, got {batch}")
        self._state[2] = int(batch)

    def windows(self, epoch: int) -> Iterator[List[Tuple[int, int]]]:
        """The rank's videos of pass ``epoch`` as (shard, position in its listing), ``buffer_videos`` at a time."""
        seed = self.cfg.seed
        window: List[Tuple[int, int]] = []
        for s in np.random.default_rng([seed, epoch]).permutation(len(self.shards.shards)):
            if s % self.world_size != self.rank:
                continue
            for j in np.random.default_rng([seed, epoch, int(s)]).permutation(self.shards.shards[s].count):
                window.append((int(s), int(j)))
                if len(window) == self.buffer_videos:
                    yield window
                    window = []
        if window:
            yield window

    def plan(self, epoch: Optional[int] = None) -> Iterator[List[Item]]:
        """The rank's items (shard, position in its listing, clip k) of pass ``epoch``, one window at a time, in
        order, before the cut to ``len``."""
        epoch = self.epoch if epoch is None else epoch
        for number, window in enumerate(self.windows(epoch)):
            items = [(s, j, k) for s, j in window for k in range(self.clips_per_video)]
            order = np.random.default_rng([self.cfg.seed, epoch, self.rank, number]).permutation(len(items))
            yield [items[i] for i in order]

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        info = get_worker_info()
        if info is None:
            return self._items(0, 1)
        # a forked worker never frees what it inherited (a copy of an FFmpeg decoder can hang when freed): the
        # garbage collector leaves the inherited objects alone, and the parent's decoders stay referenced
        gc.freeze()
        self._parent_decoders = self.decoders
        self.decoders = OpenVideos(self.buffer_videos, **self.shards.decoders.options)
        return self._items(info.id, info.num_workers)

    def _items(self, worker: int, workers: int) -> Iterator[Dict[str, torch.Tensor]]:
        """The items of the pass that belong to DataLoader worker ``worker`` of ``workers``, window by window."""
        first, size, stop = self.start_batch, self.batch_size, len(self)
        clips, position = _VideoClips(self), 0
        for window in self.plan():
            mine = [item for p, item in enumerate(window, position)
                    if first * size <= p < stop and (p // size - first) % workers == worker]
            position += len(window)
            if mine:
                yield from self._window_items(clips, mine)
            if position >= stop:
                return

    def _window_items(self, clips: _VideoClips, items: List[Item]) -> Iterator[Dict[str, torch.Tensor]]:
        """``items`` of one window. The frames they read (clip + references, drawn as ClipDataset draws them) are
        decoded first, video by video in increasing order: decoding runs forward once per video instead of seeking
        back to a keyframe for every clip (H.264 often has one keyframe per video)."""
        needed: Dict[Tuple[int, int], set] = {}
        for s, j, k in items:
            video = self.shards.video(s, j, self.decoders)
            rng = np.random.default_rng(clips.item_seed(clips.index(self.shards.first_video(s) + j, k)))
            clip = sample_clip_indices(rng, len(video), self.cfg.num_frames, self.max_skip)
            refs = sample_reference_indices(rng, len(video), clip, self.cfg.num_refs)
            needed.setdefault((s, j), set()).update(int(i) for i in (*clip, *refs))
        decoded = {}
        for (s, j), indices in needed.items():
            video = self.shards.video(s, j, self.decoders)
            decoded[(s, j)] = _Decoded(video, {i: video.frame(i) for i in sorted(indices)})
        for s, j, k in items:
            yield clips.clip(decoded[(s, j)], self.shards.first_video(s) + j, k)
        self.prefetch_misses += sum(video.misses for video in decoded.values())


class _Decoded(VideoView):
    """``video`` with the frames in ``frames`` decoded ahead; any other frame is read from ``video`` and counted
    in ``misses`` (0 when the draws were predicted right)."""

    def __init__(self, video: ShardVideo, frames: Dict[int, np.ndarray]) -> None:
        super().__init__(video)
        self.frames, self.misses = frames, 0

    def _read_frame(self, index: int) -> np.ndarray:
        if index in self.frames:
            return self.frames[index]
        self.misses += 1
        return self.video.frame(index)


def clip_dataset(collection: VideoCollection, cfg: ClipSamplerConfig, mask_provider: Optional[MaskProvider] = None,
                 augment: Optional[ClipAugmenter] = None, clips_per_video: int = 1,
                 buffer_videos: int = 8) -> Dataset:
    """What the pretraining recipe trains on: a :class:`ClipStream` for a ``stream:`` source, else a
    :class:`ClipDataset` (same items, map-style)."""
    if isinstance(collection, VideoShards):
        return ClipStream(collection, cfg, mask_provider, augment, clips_per_video, buffer_videos=buffer_videos)
    return ClipDataset(collection, cfg, mask_provider=mask_provider, augment=augment, clips_per_video=clips_per_video)


def is_rank_stream(dataset: Any) -> bool:
    """Whether ``dataset`` is an ``IterableDataset`` that shards itself per process (``set_rank``, ``start_at``,
    ``set_epoch``, ``__len__``), as :class:`ClipStream`."""
    return isinstance(dataset, IterableDataset) and all(
        hasattr(dataset, name) for name in ("set_rank", "start_at", "set_epoch", "__len__"))


def prepare_stream_loader(loader: DataLoader, accelerator: Any) -> DataLoader:
    """``loader`` over a rank stream, for this process of ``accelerator``: the stream reads the shards of rank
    ``process_index`` of ``num_processes`` itself, so Accelerate neither dispatches (the main process would read
    every shard) nor re-shards it; batches are put on the device. Any other ``IterableDataset`` is a
    ``TypeError`` (its order could be neither split nor resumed)."""
    from accelerate.data_loader import prepare_data_loader

    dataset = loader.dataset
    if not is_rank_stream(dataset):
        raise TypeError(f"an IterableDataset must shard itself per process and resume by batch (set_rank, start_at, "
                        f"set_epoch, __len__; see selfvos.data.clip_stream), got {type(dataset).__name__}")
    dataset.set_rank(accelerator.process_index, accelerator.num_processes, loader.batch_size)
    return prepare_data_loader(loader, accelerator.device, num_processes=1, process_index=0, put_on_device=True,
                               dispatch_batches=False, non_blocking=bool(getattr(accelerator, "non_blocking", False)))
