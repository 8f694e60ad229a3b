"""Validation while fine-tuning: one-shot segmentation of held-out videos scored with the official metric.

``one_shot_scores(model, collection)`` segments every video from its first annotated frame with
``selfvos.Segmenter`` (the head's own inference core) and scores it in memory with the DAVIS evaluator
(per object, official protocol: first and last frame excluded). Returns ``{"J&F", "J", "F"}`` in percent.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from selfvos.data.video import VideoCollection, first_frame_mask
from selfvos.eval.davis import DatasetResult, evaluate_sequence


def one_shot_scores(model: Any, collection: VideoCollection, max_side: Optional[int] = None,
                    head: Optional[Dict[str, Any]] = None) -> Dict[str, float]:
    """J&F, J and F (percent) of one-shot segmentation on every video of ``collection`` (all frames annotated)."""
    from selfvos.inference.segmenter import Segmenter

    segmenter = Segmenter(model, "one-shot", head=head, max_side=max_side)
    sequences = {}
    for video in collection:
        gt = [video.mask(t) for t in range(len(video))]
        first = first_frame_mask(video)
        if first is None:
            raise ValueError(f"{video.name}: frame 0 has no annotation to start a one-shot run from")
        pred = list(segmenter.segment_video(video, first_mask=first, progress=False))
        sequences[video.name] = evaluate_sequence(video.name, video.frame_names, gt, pred, multi_object=True)
    mean = DatasetResult(sequences, multi_object=True, protocol="official").mean()
    return {"J&F": 100 * mean["JF"], "J": 100 * mean["J"], "F": 100 * mean["F"]}
