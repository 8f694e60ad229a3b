"""Run a pseudo-labeler over a collection into a :class:`PseudoLabelStore` round, resumably and all-or-nothing,
in one process or sharded over the ranks of a distributed run.

The round is built in the store's staging folder and moved into place only once every video is done, so a
failure part-way leaves no partial round where readers look. Videos whose completion marker exists are
skipped, so re-running after an interruption continues with the first unfinished video (its frames are simply
rewritten; every write is atomic). When the collection has ground-truth masks, the round's manifest records
the pseudo-masks' J against them.

Sharding (:class:`ShardPlan`, ``world_size`` W > 1): every rank runs :func:`generate_pseudo_labels` with the
same arguments, and

1. the main rank (0) creates or resumes the round (``begin_round``); barrier;
2. every rank reads the completion markers (the unfinished videos ``todo``); barrier (no marker is written
   before every rank has read them, so all ranks split the same ``todo``);
3. rank r labels its share ``split_videos(todo, W)[r]`` into the staging folder and writes each finished
   video's marker (the staged manifest is left alone: one writer only); barrier;
4. the main rank records every marked video in the manifest, scores the round and writes ONE manifest
   (``finish_round``); barrier; every rank returns that manifest.

A video's masks depend on the video and the labeler only, so the round is the same whatever W; a rank that
dies leaves its finished videos marked, and a re-run with any W labels only the rest. W = 1 (the default)
runs no barrier and is the one-process behaviour. The store must be on a filesystem every rank sees.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from selfvos.data.video import VideoCollection
from selfvos.pseudo.base import PseudoLabeler
from selfvos.pseudo.quality import evaluate_pseudo_masks
from selfvos.pseudo.store import PseudoLabelStore

log = logging.getLogger(__name__)


def _no_barrier() -> None:
    """The barrier of a single process: nothing to wait for."""


def split_videos(frames: Mapping[str, int], world_size: int) -> List[List[str]]:
    """Deterministic balanced split of videos over ``world_size`` ranks.

    ``frames``: video name -> frames to label (its cost). Greedy longest-first: videos in the order
    (-frames, name) each go to the rank with the smallest (load, rank), load = frames assigned so far, so
    ``max load - min load <= max frames`` of one video. Every video lands on exactly one rank; the result
    depends on the names and counts only (not on the mapping's order). Returns one list per rank, each in the
    mapping's order.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    load, owner = [0] * world_size, {}
    for name in sorted(frames, key=lambda n: (-int(frames[n]), n)):
        rank = min(range(world_size), key=lambda r: (load[r], r))
        owner[name] = rank
        load[rank] += int(frames[name])
    return [[n for n in frames if owner[n] == rank] for rank in range(world_size)]


@dataclass(frozen=True)
class ShardPlan:
    """This process's place in a sharded generation: ``rank`` of ``world_size``, and ``barrier()`` that
    returns once every rank has called it (``accelerator.wait_for_everyone``, ``torch.distributed.barrier``)."""

    rank: int = 0
    world_size: int = 1
    barrier: Callable[[], None] = _no_barrier

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {self.rank} of {self.world_size}")

    @classmethod
    def from_state(cls, state: Any) -> "ShardPlan":
        """The plan of an ``accelerate`` ``Accelerator`` / ``PartialState`` (or anything with
        ``process_index``, ``num_processes`` and ``wait_for_everyone``)."""
        return cls(int(state.process_index), int(state.num_processes), state.wait_for_everyone)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, frames: Mapping[str, int]) -> List[str]:
        """This rank's videos of :func:`split_videos` (in the mapping's order)."""
        return split_videos(frames, self.world_size)[self.rank]


def generate_pseudo_labels(collection: VideoCollection, store: PseudoLabelStore, round: int, labeler: PseudoLabeler,
                           *, frame_step: int = 1, progress: bool = True, overwrite: bool = False,
                           videos: Optional[Sequence[str]] = None, eval_gt: bool = True,
                           shard: Optional[ShardPlan] = None) -> Dict[str, Any]:
    """Label every ``frame_step``-th frame of each video into round ``round`` of ``store``.

    ``shard``: this process's :class:`ShardPlan` when every rank of a distributed run calls this with the same
    arguments (see the module docstring); None = one process. Returns the round's final manifest on every
    rank (``quality`` holds :func:`evaluate_pseudo_masks` output when ``eval_gt`` and the collection has
    masks, else None).
    """
    from tqdm.auto import tqdm

    if frame_step < 1:
        raise ValueError(f"frame_step must be >= 1, got {frame_step}")
    plan = shard or ShardPlan()
    sharded = plan.world_size > 1
    names = list(dict.fromkeys(videos if videos is not None else collection.names))
    if plan.is_main:
        store.begin_round(round, labeler.config(), source=collection.source, videos=names, frame_step=frame_step,
                          overwrite=overwrite)
    plan.barrier()
    todo = [n for n in names if not store.is_video_complete(round, n)]
    plan.barrier()
    if len(todo) < len(names) and plan.is_main:
        log.info("round %d: resuming, %d of %d videos already done", round, len(names) - len(todo), len(names))
    counts = {n: len(range(0, len(collection[n]), frame_step)) for n in todo}
    mine = plan.shard(counts)
    desc = f"pseudo-labels round {round}" + (f" (rank {plan.rank}/{plan.world_size})" if sharded else "")
    with tqdm(total=sum(counts[n] for n in mine), desc=desc, unit="frame", disable=not progress) as bar:
        for name in mine:
            video = collection[name]
            indices = list(range(0, len(video), frame_step))
            for index in indices:
                store.write(round, name, index, labeler(video, index))
                bar.update(1)
            frame_names = video.frame_names
            store.mark_video_complete(round, name, indices, [frame_names[i] for i in indices],
                                      update_manifest=not sharded)
    plan.barrier()
    manifest: Dict[str, Any] = {}
    if plan.is_main:
        store.sync_completed(round)
        quality = None
        if eval_gt and any(collection[n].has_masks for n in names):
            quality = evaluate_pseudo_masks(collection, store.mask_provider(round, staging=True),
                                            frame_step=frame_step, videos=names)
        manifest = store.finish_round(round, quality)
    plan.barrier()
    return manifest if plan.is_main else store.manifest(round)
