"""Validation while fine-tuning: segmentation of held-out videos scored with the official metric.

``segmentation_scores(model, collection, task)`` segments every video with ``selfvos.Segmenter`` (the head's own
inference core) and scores it in memory with the DAVIS evaluator (official protocol: first and last frame
excluded). Returns ``{"J&F", "J", "F"}`` in percent.

- ``task="one-shot"`` (``one_shot_scores``): each video from its first annotated frame's mask, scored per object;
- ``task="zero-shot"`` (``zero_shot_scores``, the zero-shot heads): no mask is given, ``Segmenter(model,
  "zero-shot", max_side=...)`` segments the primary object, scored single-object (every non-zero, non-void id
  of the ground truth is the foreground), as the label-free pipeline's benchmark scores zero-shot;
- ``task="zero-shot", multi_object=True`` (default for a head whose class sets ``zero_shot_instances = True``,
  e.g. RVOS trained zero-shot): the predicted instance ids are matched one-to-one to the ground-truth objects of
  frame 0 (Hungarian, maximising the mean J over the video's frames, as the DAVIS-2017 unsupervised protocol
  matches instances), relabelled (unmatched predictions -> background) and scored per object.

``task="vis"`` (``vis_scores``, a head whose ``training_task`` is ``"vis"``, e.g. MaskTrack): the YouTube-VIS metric
(:func:`selfvos.eval.vis.evaluate_vis`) of the head's tracks against ``davis_to_vis(collection)`` (class-agnostic
instance tracks, video ids 1..N in collection order). The head tracks the ground-truth instances as a stand-in
detector (:class:`~selfvos.inference.vis.GivenInstances`: the instances of each frame in a random order, boxes
jittered by ``VIS_BOX_JITTER`` of their size, seeded by the video's position in the collection), built through the
generic ``create_vis_core`` (the ``CORES`` factory of the architecture). Returns ``{"AP", "AP50", "AP75", "AR1",
"AR10"}`` in percent (-100 where the reference gives -1: no ground truth); the best is chosen on ``"AP"``
(:func:`validation_metric`).

Under N processes (``accelerator=`` with ``num_processes > 1``), process ``r`` segments and scores only the
videos ``shard_range(len(collection), r, N)`` (contiguous blocks); the per-video results are gathered with
``gather_object`` in video order, so every process computes the same means from the same per-video results
in the same order as one process does: the scores are equal to one process's, bit for bit, whenever each
video's masks are (same weights, same frames). For ``"vis"`` the per-video result records are gathered and every
process computes the AP over all videos.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from selfvos.data.video import VideoCollection, first_frame_mask
from selfvos.engine.distributed import gather_in_order, shard_range
from selfvos.eval.davis import DatasetResult, SequenceResult, evaluate_sequence

VOID = 255
VIS_BOX_JITTER = 0.1  # the ground-truth boxes moved by up to 10 % of their size, as in training (MaskTrack)
VIS_STATS = ("AP", "AP50", "AP75", "AR1", "AR10")


def validation_metric(task: str) -> str:
    """The metric the best checkpoint is chosen on: ``"AP"`` for ``task="vis"``, else ``"J&F"``."""
    return "AP" if task == "vis" else "J&F"


def match_instances(gt: List[Optional[np.ndarray]], pred: List[np.ndarray]) -> List[np.ndarray]:
    """Zero-shot instance ids ``pred`` relabelled to the ground-truth ids of ``gt[0]``: the one-to-one matching
    (``linear_sum_assignment``) maximising the sum over matched pairs of the mean J over the annotated frames
    (void excluded); predicted ids left unmatched become 0."""
    from scipy.optimize import linear_sum_assignment

    truth_ids = [int(i) for i in np.unique(gt[0]) if i not in (0, VOID)]
    pred_ids = sorted({int(i) for p in pred for i in np.unique(p) if i != 0})
    if not truth_ids or not pred_ids:
        return [np.zeros_like(p) for p in pred]
    scores = np.zeros((len(truth_ids), len(pred_ids)))
    frames = [t for t, g in enumerate(gt) if g is not None]
    for t in frames:
        known = gt[t] != VOID
        for a, g in enumerate(truth_ids):
            gm = (gt[t] == g) & known
            for b, q in enumerate(pred_ids):
                pm = (pred[t] == q) & known
                union = (gm | pm).sum()
                scores[a, b] += (gm & pm).sum() / union if union else 1.0
    rows, cols = linear_sum_assignment(-scores / max(len(frames), 1))
    lut = np.zeros(256, np.uint8)
    for a, b in zip(rows, cols):
        lut[pred_ids[b]] = truth_ids[a]
    return [lut[p] for p in pred]


def score_video(segmenter: Any, video: Any, task: str, multi_object: bool) -> SequenceResult:
    """Segment one video with ``segmenter`` and score it (see the module docstring for the protocols)."""
    gt = [video.mask(t) for t in range(len(video))]
    first = None
    if task == "one-shot":
        first = first_frame_mask(video)
        if first is None:
            raise ValueError(f"{video.name}: frame 0 has no annotation to start a one-shot run from")
    elif not multi_object:
        gt = [None if g is None else ((g != 0) & (g != VOID)).astype(np.uint8) for g in gt]
    pred = list(segmenter.segment_video(video, first_mask=first, progress=False))
    if task == "zero-shot" and multi_object:
        pred = match_instances(gt, pred)
    return evaluate_sequence(video.name, video.frame_names, gt, pred, multi_object=multi_object)


def video_results(model: Any, collection: VideoCollection, task: str = "one-shot", max_side: Optional[int] = None,
                  head: Optional[Dict[str, Any]] = None, multi_object: Optional[bool] = None,
                  accelerator: Any = None) -> Tuple[List[SequenceResult], bool]:
    """``(one SequenceResult per video of collection, in collection order, multi_object)`` on every process;
    with ``accelerator`` each process scores its own block of videos (``shard_range``) and the blocks are
    gathered. A video that fails on one process stops every process (``gather_in_order``)."""
    from selfvos.inference.segmenter import Segmenter

    if task not in ("one-shot", "zero-shot"):
        raise ValueError(f"task must be 'one-shot' or 'zero-shot', got {task!r}")
    if multi_object is None:
        multi_object = task == "one-shot" or bool(getattr(type(model), "zero_shot_instances", False))
    rank, world = (0, 1) if accelerator is None else (accelerator.process_index, accelerator.num_processes)
    local: List[Tuple[int, SequenceResult]] = []
    error: Optional[BaseException] = None
    try:
        segmenter = Segmenter(model, task, head=head, max_side=max_side)
        for index in shard_range(len(collection), rank, world):
            local.append((index, score_video(segmenter, collection[index], task, multi_object)))
    except Exception as err:  # every process must still reach the gather
        error = err
    gathered = gather_in_order(local, error, accelerator)
    return [result for _, result in gathered], multi_object


def segmentation_scores(model: Any, collection: VideoCollection, task: str = "one-shot",
                        max_side: Optional[int] = None, head: Optional[Dict[str, Any]] = None,
                        multi_object: Optional[bool] = None, accelerator: Any = None) -> Dict[str, float]:
    """J&F, J and F (percent) of ``task`` segmentation (``"one-shot"`` | ``"zero-shot"``) on every video of
    ``collection`` (all frames annotated); ``task="vis"``: :func:`vis_scores` (AP, ...). ``multi_object`` (zero-shot only; None: the model class's
    ``zero_shot_instances``): score instances matched to the ground-truth objects instead of one foreground.
    ``accelerator``: every process calls it and scores its share of the videos (module docstring); every
    process returns the same scores."""
    if task == "vis":
        return vis_scores(model, collection, max_side=max_side, head=head, accelerator=accelerator)
    results, multi_object = video_results(model, collection, task, max_side, head, multi_object, accelerator)
    sequences = {result.name: result for result in results}
    mean = DatasetResult(sequences, multi_object=multi_object, protocol="official").mean()
    return {"J&F": 100 * mean["JF"], "J": 100 * mean["J"], "F": 100 * mean["F"]}


def vis_instances(video: Any, seed: int) -> Any:
    """The ground-truth instances of ``video`` as a detector (module docstring): per frame its id map (void and
    unannotated frames -> background) shuffled, boxes jittered by ``VIS_BOX_JITTER``, seeded by ``seed``."""
    from selfvos.inference.vis import GivenInstances

    def ids(t: int) -> np.ndarray:
        mask = video.mask(t)
        if mask is None:
            return np.zeros(video.frame(t).shape[:2], np.uint8)
        return np.where(mask == VOID, 0, mask)

    return GivenInstances(ids, shuffle=True, box_jitter=VIS_BOX_JITTER, seed=seed, name=f"{video.name} ground truth")


def vis_video_records(model: Any, collection: VideoCollection, indices: Sequence[int], max_side: Optional[int] = None,
                      head: Optional[Dict[str, Any]] = None) -> List[Tuple[int, List[Dict[str, Any]]]]:
    """``(index, YouTube-VIS result records of video index)`` for each of ``indices``: the model's VIS core tracks
    :func:`vis_instances` ``(video, seed=index)``; video id ``index + 1`` (as ``davis_to_vis``)."""
    from selfvos.inference.vis import create_vis_core

    out = []
    for index in indices:
        video = collection[index]
        core = create_vis_core(model, vis_instances(video, index), head, max_side)
        out.append((index, core.to_vis_results(index + 1, core.segment_video(video))))
    return out


def vis_scores(model: Any, collection: VideoCollection, max_side: Optional[int] = None,
               head: Optional[Dict[str, Any]] = None, accelerator: Any = None) -> Dict[str, float]:
    """YouTube-VIS ``VIS_STATS`` (percent) of the model's tracks on every video of ``collection`` (module
    docstring). With ``accelerator`` each process tracks its block of videos (``shard_range``), the records are
    gathered in video order and every process scores all of them: every process returns the same scores, equal
    to one process's."""
    from selfvos.eval.vis import davis_to_vis, evaluate_vis

    rank, world = (0, 1) if accelerator is None else (accelerator.process_index, accelerator.num_processes)
    local: List[Tuple[int, List[Dict[str, Any]]]] = []
    error: Optional[BaseException] = None
    try:
        local = vis_video_records(model, collection, shard_range(len(collection), rank, world), max_side, head)
    except Exception as err:  # every process must still reach the gather
        error = err
    records = [record for _, part in gather_in_order(local, error, accelerator) for record in part]
    stats = evaluate_vis(davis_to_vis(collection), records).stats
    return {name: 100 * stats[name] for name in VIS_STATS}


def one_shot_scores(model: Any, collection: VideoCollection, max_side: Optional[int] = None,
                    head: Optional[Dict[str, Any]] = None) -> Dict[str, float]:
    """J&F, J and F (percent) of one-shot segmentation on every video of ``collection`` (all frames annotated)."""
    return segmentation_scores(model, collection, "one-shot", max_side=max_side, head=head)


def zero_shot_scores(model: Any, collection: VideoCollection, max_side: Optional[int] = None,
                     head: Optional[Dict[str, Any]] = None) -> Dict[str, float]:
    """J&F, J and F (percent) of zero-shot segmentation (single object) on every video of ``collection``."""
    return segmentation_scores(model, collection, "zero-shot", max_side=max_side, head=head)
