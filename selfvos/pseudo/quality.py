"""Pseudo-mask quality against ground truth, where a collection has masks.

Per frame, ``J = |P & G| / |P | G|`` with ``P = soft >= threshold`` and ``G`` = every object id
(> 0, not void) as one foreground; void pixels are left out of both; both empty -> 1, one empty -> 0
(the DAVIS convention). A video's score is the mean over its scored frames; the overall score is the
mean over videos (DAVIS-2016 averages over sequences).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import numpy as np

from selfvos.data.video import VOID, VideoCollection

MasksFn = Callable[[str, int], Optional[np.ndarray]]


def frame_jaccard(pred: np.ndarray, gt: np.ndarray, valid: Optional[np.ndarray] = None) -> float:
    """J of two bool (H, W) masks over the ``valid`` pixels (all when None)."""
    if valid is not None:
        pred, gt = pred & valid, gt & valid
    union = np.count_nonzero(pred | gt)
    return 1.0 if union == 0 else float(np.count_nonzero(pred & gt)) / union


def evaluate_pseudo_masks(collection: VideoCollection, masks_fn: MasksFn, *, frame_step: int = 10,
                          threshold: float = 0.5, videos: Optional[Sequence[str]] = None,
                          progress: bool = False) -> Dict[str, object]:
    """Score pseudo-masks against GT on every ``frame_step``-th annotated frame.

    ``masks_fn(video_name, frame_index)`` returns a soft (H, W) map in [0, 1] (or a bool mask), or None
    when it has no mask for that frame (such frames are skipped and counted in ``missing``).
    Returns ``{"mean_j", "per_video": {name: mean J}, "frames", "missing", "threshold", "frame_step"}``;
    ``mean_j`` is None when no frame could be scored. Videos without masks are skipped.
    """
    from tqdm.auto import tqdm

    per_video: Dict[str, float] = {}
    frames = missing = 0
    names = list(videos) if videos is not None else collection.names
    for name in tqdm(names, desc="J vs GT", disable=not progress):
        video = collection[name]
        if not video.has_masks:
            continue
        annotated = set(video.annotated_indices())
        scores = []
        for index in range(0, len(video), frame_step):
            if index not in annotated:
                continue
            soft = masks_fn(name, index)
            if soft is None:
                missing += 1
                continue
            gt_ids = video.mask(index)
            pred = soft >= threshold if soft.dtype != bool else soft
            if pred.shape != gt_ids.shape:
                raise ValueError(f"{name} frame {index}: pseudo-mask {pred.shape} vs GT {gt_ids.shape}")
            void = gt_ids == getattr(video, "void_value", VOID)
            scores.append(frame_jaccard(pred, (gt_ids > 0) & ~void, ~void))
        if scores:
            per_video[name] = float(np.mean(scores))
            frames += len(scores)
    mean_j = float(np.mean(list(per_video.values()))) if per_video else None
    return {"mean_j": mean_j, "per_video": per_video, "frames": frames, "missing": missing,
            "threshold": threshold, "frame_step": frame_step}
