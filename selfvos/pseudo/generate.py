"""Run a pseudo-labeler over a collection into a :class:`PseudoLabelStore` round, resumably and all-or-nothing.

The round is built in the store's staging folder and moved into place only once every video is done, so a
failure part-way leaves no partial round where readers look. Videos whose completion marker exists are
skipped, so re-running after an interruption continues with the first unfinished video (its frames are simply
rewritten; every write is atomic). When the collection has ground-truth masks, the round's manifest records
the pseudo-masks' J against them.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Sequence

from selfvos.data.video import VideoCollection
from selfvos.pseudo.base import PseudoLabeler
from selfvos.pseudo.quality import evaluate_pseudo_masks
from selfvos.pseudo.store import PseudoLabelStore

log = logging.getLogger(__name__)


def generate_pseudo_labels(collection: VideoCollection, store: PseudoLabelStore, round: int, labeler: PseudoLabeler,
                           *, frame_step: int = 1, progress: bool = True, overwrite: bool = False,
                           videos: Optional[Sequence[str]] = None, eval_gt: bool = True) -> Dict[str, Any]:
    """Label every ``frame_step``-th frame of each video into round ``round`` of ``store``.

    Returns the round's final manifest (``quality`` holds :func:`evaluate_pseudo_masks` output when
    ``eval_gt`` and the collection has masks, else None).
    """
    from tqdm.auto import tqdm

    if frame_step < 1:
        raise ValueError(f"frame_step must be >= 1, got {frame_step}")
    names = list(videos) if videos is not None else collection.names
    store.begin_round(round, labeler.config(), source=collection.source, videos=names, frame_step=frame_step,
                      overwrite=overwrite)
    todo = [n for n in names if not store.is_video_complete(round, n)]
    if len(todo) < len(names):
        log.info("round %d: resuming, %d of %d videos already done", round, len(names) - len(todo), len(names))
    total = sum(len(range(0, len(collection[n]), frame_step)) for n in todo)
    with tqdm(total=total, desc=f"pseudo-labels round {round}", unit="frame", disable=not progress) as bar:
        for name in todo:
            video = collection[name]
            indices = list(range(0, len(video), frame_step))
            for index in indices:
                store.write(round, name, index, labeler(video, index))
                bar.update(1)
            frame_names = video.frame_names
            store.mark_video_complete(round, name, indices, [frame_names[i] for i in indices])
    quality = None
    if eval_gt and any(collection[n].has_masks for n in names):
        quality = evaluate_pseudo_masks(collection, store.mask_provider(round, staging=True), frame_step=frame_step,
                                        videos=names)
    return store.finish_round(round, quality)
