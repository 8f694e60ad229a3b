"""DAVIS region (J) and boundary (F) measures with the exact corner cases of the official code.

Reference: ``davisvideochallenge/davis2017-evaluation`` (``davis2017/metrics.py``: ``db_eval_iou``,
``db_eval_boundary``, ``f_measure``, ``_seg2bmap``; ``davis2017/utils.py``: ``db_statistics``).
Every function here is pure (arrays in, numbers out); reading PNG folders lives in ``selfvos.eval.io``.

Speed: the official code dilates both full-size boundary maps per frame. The dilated value at a boundary
pixel only depends on boundary pixels at most ``r`` away, and every boundary pixel lies inside the bounding
box of ``gt | pred`` grown by one pixel, so all work here is done on that crop. This gives identical numbers.

Multi-object rules (DAVIS-2017): objects are the ids present in the first-frame GT (the official loader takes
1..max id, the same for DAVIS' contiguous ids); void (255) pixels are removed from both masks, as the
``void_pixels`` argument of ``db_eval_iou`` / ``f_measure`` intends (the official loader zeroes 255 before
building its void mask, so there it never takes effect).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

BOUND_TH = 0.008  # boundary tolerance as a fraction of the image diagonal (official default)
PROTOCOLS = ("official", "all")
VOID_ID = 255  # "void" annotation id (multi-object ground truth)


def boundary_radius(shape: Tuple[int, int], bound_th: float = BOUND_TH) -> int:
    """Dilation radius in pixels: ``bound_th`` itself when >= 1, else ``ceil(bound_th * diagonal)``."""
    if bound_th >= 1:
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


def disk(radius: int) -> np.ndarray:
    """uint8 structuring element (2r+1, 2r+1): 1 where ``x^2 + y^2 <= r^2`` (as ``skimage.morphology.disk``)."""
    coords = np.arange(-radius, radius + 1)
    return ((coords[:, None] ** 2 + coords[None, :] ** 2) <= radius * radius).astype(np.uint8)


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """One-pixel boundary map of a binary mask (H, W) -> bool (H, W).

    A pixel is boundary when it differs from its east, south or south-east neighbour; in the last row only
    the east neighbour counts, in the last column only the south one, and the bottom-right pixel never is
    (so the image border itself is never boundary). No thinning.
    """
    seg = np.asarray(seg, dtype=bool)
    b = np.zeros_like(seg)
    b[:, :-1] = seg[:, :-1] ^ seg[:, 1:]
    b[:-1, :] |= seg[:-1, :] ^ seg[1:, :]
    b[:-1, :-1] |= seg[:-1, :-1] ^ seg[1:, 1:]
    b[-1, -1] = False
    return b


def jaccard(gt: np.ndarray, pred: np.ndarray, void: Optional[np.ndarray] = None) -> np.ndarray:
    """Region similarity |M & G| / |M | G| over the last two axes; 1 where the union is empty.

    Args:
        gt, pred: bool (..., H, W); void: optional bool (..., H, W) of pixels left out of both counts.
    Returns:
        float64 array of shape ``gt.shape[:-2]`` (a 0-d array for a single frame).
    """
    gt = np.asarray(gt, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    inter, union = pred & gt, pred | gt
    if void is not None:
        keep = ~np.asarray(void, dtype=bool)
        inter, union = inter & keep, union & keep
    n_inter = np.count_nonzero(inter, axis=(-2, -1))
    n_union = np.count_nonzero(union, axis=(-2, -1))
    return np.where(n_union == 0, 1.0, n_inter / np.maximum(n_union, 1))


def _crop_to_union(gt: np.ndarray, pred: np.ndarray) -> Optional[Tuple[slice, slice]]:
    """Window holding every boundary pixel of both masks plus one row/col of south/east context, or None
    when both are empty. seg2bmap and the dilation give the same values on it as on the full frame."""
    union = gt | pred
    rows = np.flatnonzero(union.any(axis=1))
    if rows.size == 0:
        return None
    y0, y1 = int(rows[0]), int(rows[-1])
    cols = np.flatnonzero(union[y0 : y1 + 1].any(axis=0))
    height, width = gt.shape
    return (slice(max(y0 - 1, 0), min(y1 + 2, height)),
            slice(max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, width)))


def _f_from_boundaries(gt_b: np.ndarray, pred_b: np.ndarray, radius: int) -> float:
    """F-measure of two boundary maps (h, w) with a disk tolerance of ``radius`` pixels."""
    n_gt = int(np.count_nonzero(gt_b))
    n_pred = int(np.count_nonzero(pred_b))
    if n_gt == 0 and n_pred == 0:
        return 1.0
    if n_gt == 0 or n_pred == 0:
        return 0.0
    kernel = disk(radius)
    gt_dil = cv2.dilate(gt_b.view(np.uint8), kernel).view(bool)
    pred_dil = cv2.dilate(pred_b.view(np.uint8), kernel).view(bool)
    precision = np.count_nonzero(pred_b & gt_dil) / float(n_pred)
    recall = np.count_nonzero(gt_b & pred_dil) / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def region_and_boundary(
    gt: np.ndarray, pred: np.ndarray, void: Optional[np.ndarray] = None, bound_th: float = BOUND_TH
) -> Tuple[float, float]:
    """(J, F) of one frame from bool (H, W) masks; void pixels are removed from both masks first.

    J: ``|M & G| / |M | G|``, 1 when both are empty. F: official ``f_measure``: precision = predicted
    boundary pixels within the radius-r disk of a GT boundary pixel / predicted boundary pixels, recall
    symmetric; no predicted boundary but a GT boundary -> 0, the reverse -> 0, neither -> 1.
    """
    gt = np.asarray(gt, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    if void is not None:
        keep = ~np.asarray(void, dtype=bool)
        gt, pred = gt & keep, pred & keep
    window = _crop_to_union(gt, pred)
    if window is None:
        return 1.0, 1.0
    g, p = gt[window], pred[window]
    j = np.count_nonzero(g & p) / float(np.count_nonzero(g | p))
    f = _f_from_boundaries(seg2bmap(g), seg2bmap(p), boundary_radius(gt.shape, bound_th))
    return j, f


def boundary_f(
    gt: np.ndarray, pred: np.ndarray, void: Optional[np.ndarray] = None, bound_th: float = BOUND_TH
) -> float:
    """Boundary F-measure of one frame, bool (H, W) masks (see ``region_and_boundary``)."""
    return region_and_boundary(gt, pred, void, bound_th)[1]


@dataclass(frozen=True)
class Statistics:
    """Sequence-level summary of per-frame scores: mean, recall (fraction > 0.5) and decay."""

    mean: float
    recall: float
    decay: float


def decay_bins(n_frames: int) -> Sequence[Tuple[int, int]]:
    """Four inclusive (start, end) index bins: edges ``round(linspace(1, N, 5) + 1e-10) - 1``.

    The official code casts the edges to uint8 (wrong past 256 frames); int64 is used here, which is
    identical for every DAVIS sequence.
    """
    edges = (np.round(np.linspace(1, n_frames, 5) + 1e-10) - 1).astype(np.int64)
    return [(int(edges[i]), int(edges[i + 1])) for i in range(4)]


def db_statistics(per_frame: np.ndarray) -> Statistics:
    """Mean, recall and decay of per-frame scores (N,), as the official ``db_statistics`` (NaN-aware)."""
    values = np.asarray(per_frame, dtype=np.float64)
    bins = decay_bins(len(values))
    first = values[bins[0][0] : bins[0][1] + 1]
    last = values[bins[3][0] : bins[3][1] + 1]
    return Statistics(
        mean=float(np.nanmean(values)),
        recall=float(np.nanmean(values > 0.5)),
        decay=float(np.nanmean(first) - np.nanmean(last)),
    )


def protocol_frames(n_frames: int, protocol: str) -> range:
    """Indices scored under a protocol: ``official`` = 1 .. N-2 (first and last excluded), ``all`` = 0 .. N-1."""
    if protocol == "official":
        return range(1, n_frames - 1)
    if protocol == "all":
        return range(n_frames)
    raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")


@dataclass
class ObjectResult:
    """Per-frame scores of one object over the evaluated frames: ``J`` and ``F`` float64 (N,)."""

    object_id: int
    J: np.ndarray
    F: np.ndarray

    @property
    def j_stats(self) -> Statistics:
        return db_statistics(self.J)

    @property
    def f_stats(self) -> Statistics:
        return db_statistics(self.F)

    def summary(self) -> Dict[str, float]:
        """``{"J", "F", "J_recall", "J_decay", "F_recall", "F_decay"}`` of this object."""
        j, f = self.j_stats, self.f_stats
        return {"J": j.mean, "F": f.mean, "J_recall": j.recall, "J_decay": j.decay,
                "F_recall": f.recall, "F_decay": f.decay}


@dataclass
class SequenceResult:
    """Scores of one sequence: evaluated frame names and one ``ObjectResult`` per object; ``missing`` names
    the frames that had no prediction and were scored as empty masks (``missing_as_empty`` only)."""

    name: str
    frame_names: List[str]
    objects: List[ObjectResult]
    missing: List[str] = field(default_factory=list)

    def summary(self) -> Dict[str, float]:
        """Object-averaged ``{"J", "F", "J_recall", "J_decay", "F_recall", "F_decay"}``."""
        rows = [obj.summary() for obj in self.objects]
        return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}


def first_frame_objects(first_gt: np.ndarray) -> List[int]:
    """Object ids of a multi-object sequence: the ids in its first-frame annotation except 0 and 255."""
    return [int(i) for i in np.unique(first_gt) if i not in (0, VOID_ID)]


def score_frame(
    gt: np.ndarray, pred: Optional[np.ndarray], object_ids: Optional[Sequence[int]], bound_th: float = BOUND_TH
) -> Tuple[np.ndarray, np.ndarray]:
    """J and F of every object in one frame.

    Args:
        gt: uint8 (H, W) annotation; pred: uint8 (H, W) prediction, or None for a missing (empty) frame.
        object_ids: None for a binary evaluation (``gt > 0`` vs ``pred > 0``, no void); else the ids to score
            (object k is ``== k`` in both, pixels where ``gt == 255`` are void).
    Returns:
        J, F: float64 (K,) with K = 1 (binary) or ``len(object_ids)``.
    """
    empty = np.zeros(gt.shape, dtype=bool)
    if object_ids is None:
        pairs = [(gt > 0, empty if pred is None else pred > 0)]
        void = None
    else:
        pairs = [(gt == k, empty if pred is None else pred == k) for k in object_ids]
        void = gt == VOID_ID
        void = void if void.any() else None
    scores = np.array([region_and_boundary(g, p, void, bound_th) for g, p in pairs], dtype=np.float64)
    return scores[:, 0], scores[:, 1]


def evaluate_sequence(
    name: str,
    frame_names: Sequence[str],
    gt: Sequence[Optional[np.ndarray]],
    pred: Sequence[Optional[np.ndarray]],
    multi_object: bool,
    protocol: str = "official",
    bound_th: float = BOUND_TH,
) -> SequenceResult:
    """Score one sequence of T frames.

    Args:
        frame_names: names of all T annotated frames, in order.
        gt: T uint8 (H, W) annotations (a (T, H, W) array or a list); entries outside the protocol, except
            frame 0 for multi-object, may be None. Binary: > 0 is foreground; multi-object: ids, 255 void.
        pred: T uint8 (H, W) predictions, None where a frame has no prediction (counts as empty).
        multi_object: objects = ids in ``gt[0]`` (except 0 and 255), each scored alone, void excluded;
            otherwise one object.
    """
    keep = list(protocol_frames(len(frame_names), protocol))
    object_ids = first_frame_objects(gt[0]) if multi_object else None
    per_frame = [score_frame(gt[i], pred[i], object_ids, bound_th) for i in keep]
    j = np.stack([jf[0] for jf in per_frame], axis=1)  # (K, N)
    f = np.stack([jf[1] for jf in per_frame], axis=1)
    ids = object_ids if multi_object else [1]
    objects = [ObjectResult(k, j[n], f[n]) for n, k in enumerate(ids)]
    return SequenceResult(name, [frame_names[i] for i in keep], objects)


@dataclass
class DatasetResult:
    """All sequences of one evaluation; dataset means are over objects (DAVIS-2016: over sequences).
    ``missing_as_empty``: whether frames without a prediction were allowed (scored as empty masks)."""

    sequences: Dict[str, SequenceResult]
    multi_object: bool
    protocol: str
    missing_as_empty: bool = False

    def missing_frames(self) -> Dict[str, List[str]]:
        """``{sequence: [frame names]}`` of the frames scored as empty because they had no prediction."""
        return {name: list(seq.missing) for name, seq in self.sequences.items() if seq.missing}

    @property
    def missing_count(self) -> int:
        """How many frames had no prediction (scored as empty masks)."""
        return sum(len(seq.missing) for seq in self.sequences.values())

    def objects(self) -> Dict[str, ObjectResult]:
        """Every object, keyed ``<sequence>_<id>`` as the official per-object table."""
        return {f"{s.name}_{o.object_id}": o for s in self.sequences.values() for o in s.objects}

    def mean(self) -> Dict[str, float]:
        """``{"J", "F", "JF"}``: J and F means over all objects, JF = (J + F) / 2."""
        objs = list(self.objects().values())
        j = float(np.mean([o.j_stats.mean for o in objs]))
        f = float(np.mean([o.f_stats.mean for o in objs]))
        return {"J": j, "F": f, "JF": (j + f) / 2}
