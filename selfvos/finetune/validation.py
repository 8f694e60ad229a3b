"""Validation while fine-tuning: segmentation of held-out videos scored with the official metric.

``segmentation_scores(model, collection, task)`` segments every video with ``selfvos.Segmenter`` (the head's own
inference core) and scores it in memory with the DAVIS evaluator (official protocol: first and last frame
excluded). Returns ``{"J&F", "J", "F"}`` in percent.

- ``task="one-shot"`` (``one_shot_scores``): each video from its first annotated frame's mask, scored per object;
- ``task="zero-shot"`` (``zero_shot_scores``, the zero-shot heads): no mask is given, ``Segmenter(model,
  "zero-shot", max_side=...)`` segments the primary object, scored single-object (every non-zero, non-void id
  of the ground truth is the foreground), as the label-free pipeline's benchmark scores zero-shot.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from selfvos.data.video import VideoCollection, first_frame_mask
from selfvos.eval.davis import DatasetResult, evaluate_sequence

VOID = 255


def segmentation_scores(model: Any, collection: VideoCollection, task: str = "one-shot",
                        max_side: Optional[int] = None, head: Optional[Dict[str, Any]] = None) -> Dict[str, float]:
    """J&F, J and F (percent) of ``task`` segmentation (``"one-shot"`` | ``"zero-shot"``) on every video of
    ``collection`` (all frames annotated)."""
    from selfvos.inference.segmenter import Segmenter

    if task not in ("one-shot", "zero-shot"):
        raise ValueError(f"task must be 'one-shot' or 'zero-shot', got {task!r}")
    multi_object = task == "one-shot"
    segmenter = Segmenter(model, task, head=head, max_side=max_side)
    sequences = {}
    for video in collection:
        gt = [video.mask(t) for t in range(len(video))]
        first = None
        if multi_object:
            first = first_frame_mask(video)
            if first is None:
                raise ValueError(f"{video.name}: frame 0 has no annotation to start a one-shot run from")
        else:
            gt = [None if g is None else ((g != 0) & (g != VOID)).astype(np.uint8) for g in gt]
        pred = list(segmenter.segment_video(video, first_mask=first, progress=False))
        sequences[video.name] = evaluate_sequence(video.name, video.frame_names, gt, pred, multi_object=multi_object)
    mean = DatasetResult(sequences, multi_object=multi_object, protocol="official").mean()
    return {"J&F": 100 * mean["JF"], "J": 100 * mean["J"], "F": 100 * mean["F"]}


def one_shot_scores(model: Any, collection: VideoCollection, max_side: Optional[int] = None,
                    head: Optional[Dict[str, Any]] = None) -> Dict[str, float]:
    """J&F, J and F (percent) of one-shot segmentation on every video of ``collection`` (all frames annotated)."""
    return segmentation_scores(model, collection, "one-shot", max_side=max_side, head=head)


def zero_shot_scores(model: Any, collection: VideoCollection, max_side: Optional[int] = None,
                     head: Optional[Dict[str, Any]] = None) -> Dict[str, float]:
    """J&F, J and F (percent) of zero-shot segmentation (single object) on every video of ``collection``."""
    return segmentation_scores(model, collection, "zero-shot", max_side=max_side, head=head)
