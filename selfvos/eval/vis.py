"""YouTube-VIS evaluation: the results / ground-truth JSON format and the benchmark's metric.

Format (YouTube-VIS 2019/2021):

- ground truth: ``{"videos": [{"id", "height", "width", "length"?, "file_names"?}, ...],
  "categories": [{"id", "name"}, ...], "annotations": [{"id", "video_id", "category_id", "iscrowd",
  "segmentations": [RLE or None per frame], "areas": [int or None per frame], "bboxes": [...]}, ...]}``;
- results: ``[{"video_id", "category_id", "score", "segmentations": [RLE or None per frame]}, ...]``.

An RLE is pycocotools' ``{"size": [H, W], "counts": ...}`` (compressed string, or the uncompressed list of
run lengths of the official ground truth); a polygon list is accepted as the reference accepts it. ``None``
marks a frame where the instance is absent.

The metric is that of the YouTube-VIS API (``ytvoseval.py`` of the youtubevos fork of cocoapi), computed by
:class:`VISEval`, a subclass of pycocotools' ``COCOeval`` whose matching, accumulation and summary are reused
unchanged (they are line for line those of ``YTVOSeval``); only what differs for videos is overridden:

- an instance's area is its mean area over the frames where it is present with a non-zero area,
  ``avg_area = mean{a_t : a_t not None, a_t > 0}`` (0 when there is none); ground truth takes ``a_t`` from its
  ``areas`` field as the reference does (from the masks when the field is absent), results from their masks;
- video IoU of a result ``d`` and a ground truth ``g`` over the frames ``t < min(len(d), len(g))``:
  ``IoU(d, g) = sum_t |d_t & g_t| / sum_t |d_t | g_t|`` (a frame where both are absent adds nothing; the IoU
  is 0 when the union is empty);
- area ranges (pixels, on ``avg_area``): all ``[0, 1e10]``, small ``[0, 128^2]``, medium ``[128^2, 256^2]``,
  large ``[256^2, 1e10]``;
- a crowd ground truth (``iscrowd`` 1) is ignored: matching it neither counts as a true positive nor as a
  false positive, and it may absorb several results (its IoU is the plain video IoU, as in the reference).

Per category, results are sorted by score and greedily matched to the unmatched ground truth of highest IoU
above each threshold ``0.50:0.05:0.95``; precision is interpolated at 101 recall points (``0:0.01:1``) and
averaged: ``AP = mean_{t,k,r} p_interp``. ``AR@m`` is the recall reached with the ``m`` best results per video
and category, averaged over thresholds and categories. Categories without ground truth are left out of the
means (the reference's ``-1``).
"""
from __future__ import annotations

import contextlib
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from selfvos.atomic import atomic_write_json, naming_path
from selfvos.errors import SelfvosInputError

PathLike = Union[str, Path]
RLE = Dict[str, Any]

# The YouTube-VIS API's area ranges (ytvoseval.Params.setDetParams): video instances are larger than COCO's.
AREA_RANGES = ([0 ** 2, 1e5 ** 2], [0 ** 2, 128 ** 2], [128 ** 2, 256 ** 2], [256 ** 2, 1e5 ** 2])
AREA_LABELS = ("all", "small", "medium", "large")
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
OBJECT_CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}


# --------------------------------------------------------------------------------------------------- RLE


def encode_rle(mask: np.ndarray) -> RLE:
    """(H, W) mask (nonzero = foreground) -> compressed RLE ``{"size": [H, W], "counts": str}`` (JSON-ready)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask != 0, dtype=np.uint8))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(segmentation: Union[RLE, list], height: int, width: int) -> np.ndarray:
    """A segmentation (compressed / uncompressed RLE or polygons) -> (H, W) uint8 mask of 0/1."""
    return mask_utils.decode(to_rle(segmentation, height, width))


def to_rle(segmentation: Union[RLE, list], height: int, width: int) -> RLE:
    """The compressed RLE of a segmentation, as the reference's ``annToRLE``: polygons are rasterised and merged,
    an uncompressed RLE (``counts`` a list) is compressed, a compressed one is returned as it is."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation.get("counts"), list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def encode_track(masks: np.ndarray, present: Optional[Sequence[bool]] = None) -> List[Optional[RLE]]:
    """(T, H, W) masks of one instance -> per-frame RLEs, ``None`` where ``present`` is False (default: where
    the mask is empty)."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (T, H, W), got shape {masks.shape}")
    if present is None:
        present = masks.reshape(len(masks), -1).any(axis=1)
    return [encode_rle(m) if p else None for m, p in zip(masks, present)]


def frame_areas(segmentations: Sequence[Optional[RLE]]) -> List[Optional[int]]:
    """Pixel area of each frame's compressed RLE, ``None`` where the instance is absent."""
    return [int(mask_utils.area(s)) if s else None for s in segmentations]


def frame_bboxes(segmentations: Sequence[Optional[RLE]]) -> List[Optional[List[float]]]:
    """``[x, y, w, h]`` box of each frame's compressed RLE, ``None`` where the instance is absent."""
    return [[float(v) for v in mask_utils.toBbox(s)] if s else None for s in segmentations]


def mean_area(areas: Sequence[Optional[float]]) -> float:
    """``avg_area`` of the reference: mean of the frame areas that are neither None nor 0; 0 when none is."""
    kept = [a for a in areas if a]
    return float(np.array(kept).mean()) if kept else 0.0


def result_record(video_id: int, category_id: int, score: float, masks: np.ndarray,
                  present: Optional[Sequence[bool]] = None) -> Dict[str, Any]:
    """One entry of a results file: an instance track ``masks`` (T, H, W) with its class and confidence."""
    return {"video_id": int(video_id), "category_id": int(category_id), "score": float(score),
            "segmentations": encode_track(masks, present)}


# ------------------------------------------------------------------------------------------ reading / writing


def _read_json(path: PathLike) -> Any:
    path = Path(path)
    if path.is_dir():
        raise SelfvosInputError(path, "is a folder; expected a YouTube-VIS JSON file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SelfvosInputError(path, "no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SelfvosInputError(path, f"cannot read file ({getattr(err, 'strerror', None) or err})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise SelfvosInputError(path, f"not valid JSON ({err})") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_segmentations(path: PathLike, where: str, segs: Any, size: Tuple[int, int],
                         length: Optional[int]) -> None:
    """Per-frame segmentations: a list of RLE dicts / polygon lists / None, of the video's size and length."""
    if not isinstance(segs, list):
        raise SelfvosInputError(path, f"{where}: 'segmentations' must be a list (one entry per frame)")
    if length is not None and len(segs) != length:
        raise SelfvosInputError(path, f"{where}: {len(segs)} segmentations for a video of {length} frames")
    h, w = size
    for t, seg in enumerate(segs):
        if not seg:  # None (absent), as the reference also treats [] and {}
            continue
        if isinstance(seg, dict):
            counts, rle_size = seg.get("counts"), seg.get("size")
            if not (isinstance(rle_size, list) and len(rle_size) == 2 and all(_is_int(v) for v in rle_size)):
                raise SelfvosInputError(path, f"{where}: segmentations[{t}]: RLE needs 'size': [height, width]")
            if tuple(rle_size) != (h, w):
                raise SelfvosInputError(path, f"{where}: segmentations[{t}]: mask is {rle_size[1]}x{rle_size[0]} "
                                              f"(WxH) but the video is {w}x{h}")
            if isinstance(counts, list):
                # set / min / sum run in C: the official ground truth holds millions of run lengths
                if set(map(type, counts)) - {int} or (counts and min(counts) < 0) or sum(counts) != h * w:
                    raise SelfvosInputError(path, f"{where}: segmentations[{t}]: uncompressed RLE counts must be "
                                                  f"non-negative integers summing to {h}*{w}")
            elif not isinstance(counts, str):
                raise SelfvosInputError(path, f"{where}: segmentations[{t}]: RLE 'counts' must be a string "
                                              "(compressed) or a list (uncompressed)")
        elif isinstance(seg, list):
            if not all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and all(map(_is_number, p))
                       for p in seg):
                raise SelfvosInputError(path, f"{where}: segmentations[{t}]: a polygon is a list of x, y numbers "
                                              "(at least 3 points)")
        else:
            raise SelfvosInputError(path, f"{where}: segmentations[{t}]: expected an RLE dict, polygons or null, "
                                          f"got {type(seg).__name__}")


def _video_length(video: dict) -> Optional[int]:
    if isinstance(video.get("file_names"), list):
        return len(video["file_names"])
    return video["length"] if _is_int(video.get("length")) else None


def check_ground_truth(data: Any, path: PathLike = "ground truth") -> Dict[str, Any]:
    """Validate a YouTube-VIS ground-truth dict (raises ``SelfvosInputError`` naming ``path``); returns it.

    Required: ``videos`` (unique int ``id``, positive ``height`` / ``width``), ``categories`` (unique int
    ``id``), ``annotations`` (unique positive int ``id``, known ``video_id`` and ``category_id``,
    ``segmentations`` as in :func:`_check_segmentations`, optional ``areas`` of the same length, optional
    ``iscrowd`` 0/1). A video's ``file_names`` / ``length``, when given, fixes the number of segmentations.
    """
    if not isinstance(data, dict):
        raise SelfvosInputError(path, "ground truth must be a JSON object with videos, categories, annotations")
    for key in ("videos", "categories", "annotations"):
        if not isinstance(data.get(key), list):
            raise SelfvosInputError(path, f"ground truth needs a list {key!r}")
    videos: Dict[int, dict] = {}
    for k, video in enumerate(data["videos"]):
        if not isinstance(video, dict) or not _is_int(video.get("id")):
            raise SelfvosInputError(path, f"videos[{k}]: needs an integer 'id'")
        if not all(_is_int(video.get(d)) and video[d] > 0 for d in ("height", "width")):
            raise SelfvosInputError(path, f"videos[{k}] (id {video['id']}): needs positive integers height, width")
        if video["id"] in videos:
            raise SelfvosInputError(path, f"videos[{k}]: video id {video['id']} appears twice")
        videos[video["id"]] = video
    categories = set()
    for k, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")):
            raise SelfvosInputError(path, f"categories[{k}]: needs an integer 'id'")
        if cat["id"] in categories:
            raise SelfvosInputError(path, f"categories[{k}]: category id {cat['id']} appears twice")
        categories.add(cat["id"])
    ids = set()
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise SelfvosInputError(path, f"annotations[{k}]: must be an object")
        ann_id = ann.get("id")
        # the API stores matches as ids with 0 meaning "unmatched": an id <= 0 would be scored as a miss
        if not _is_int(ann_id) or ann_id <= 0:
            raise SelfvosInputError(path, f"annotations[{k}]: needs a positive integer 'id'")
        where = f"annotations[{k}] (id {ann_id})"
        if ann_id in ids:
            raise SelfvosInputError(path, f"{where}: annotation id appears twice")
        ids.add(ann_id)
        if ann.get("video_id") not in videos:
            raise SelfvosInputError(path, f"{where}: video_id {ann.get('video_id')!r} is not in 'videos'")
        if ann.get("category_id") not in categories:
            raise SelfvosInputError(path, f"{where}: category_id {ann.get('category_id')!r} is not in 'categories'")
        if ann.get("iscrowd", 0) not in (0, 1):
            raise SelfvosInputError(path, f"{where}: 'iscrowd' must be 0 or 1")
        video = videos[ann["video_id"]]
        _check_segmentations(path, where, ann.get("segmentations"), (video["height"], video["width"]),
                             _video_length(video))
        areas = ann.get("areas")
        if areas is not None and (not isinstance(areas, list) or len(areas) != len(ann["segmentations"])
                                  or not all(a is None or _is_number(a) for a in areas)):
            raise SelfvosInputError(path, f"{where}: 'areas' must be a list of numbers or null, one per frame")
    return data


def check_results(results: Any, gt: Dict[str, Any], path: PathLike = "results") -> List[Dict[str, Any]]:
    """Validate a YouTube-VIS results list against its (validated) ground truth; returns it.

    Each entry needs a ``video_id`` of the ground truth, a ``category_id`` of its categories, a finite
    ``score`` and per-frame ``segmentations`` of the video's size (and length, when the video gives one).
    """
    if not isinstance(results, list):
        raise SelfvosInputError(path, "results must be a JSON list of {video_id, category_id, score, "
                                      "segmentations}")
    videos = {v["id"]: v for v in gt["videos"]}
    categories = {c["id"] for c in gt["categories"]}
    for k, res in enumerate(results):
        where = f"[{k}]"
        if not isinstance(res, dict):
            raise SelfvosInputError(path, f"{where}: must be an object")
        if res.get("video_id") not in videos:
            raise SelfvosInputError(path, f"{where}: video_id {res.get('video_id')!r} is not a video of the "
                                          "ground truth")
        if res.get("category_id") not in categories:
            raise SelfvosInputError(path, f"{where}: category_id {res.get('category_id')!r} is not a category of "
                                          "the ground truth")
        if not _is_number(res.get("score")):
            raise SelfvosInputError(path, f"{where}: 'score' must be a finite number")
        video = videos[res["video_id"]]
        _check_segmentations(path, where, res.get("segmentations"), (video["height"], video["width"]),
                             _video_length(video))
    return results


def read_vis_gt(path: PathLike) -> Dict[str, Any]:
    """Read and validate a YouTube-VIS ground-truth JSON file (:func:`check_ground_truth`)."""
    return check_ground_truth(_read_json(path), path)


def read_vis_results(path: PathLike, gt: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Read and validate a YouTube-VIS results JSON file against ``gt`` (:func:`check_results`)."""
    return check_results(_read_json(path), gt, path)


def write_vis_json(path: PathLike, data: Union[Dict[str, Any], List[Dict[str, Any]]]) -> Path:
    """Write a ground-truth dict or a results list as compact JSON, atomically; returns the path."""
    with naming_path(path):
        return atomic_write_json(path, data, indent=None, sort_keys=False, newline=True, separators=(",", ":"))


# ------------------------------------------------------------------------------------------------ metric


def _track(ann: Dict[str, Any], ann_id: int, size: Tuple[int, int], areas: Optional[Sequence] = None
           ) -> Dict[str, Any]:
    """An annotation / result prepared for :class:`VISEval`: compressed RLEs, per-frame pixel areas (0 where
    absent), presence flags and ``area`` = ``avg_area`` (from ``areas`` when given, else from the masks)."""
    h, w = size
    rles = [to_rle(s, h, w) if s else None for s in ann["segmentations"]]
    present = np.array([r is not None for r in rles], dtype=bool)
    pixels = np.zeros(len(rles), dtype=np.int64)
    if present.any():
        pixels[present] = mask_utils.area([r for r in rles if r is not None])
    if areas is None:
        areas = [int(pixels[t]) if present[t] else None for t in range(len(rles))]
    return {"id": ann_id, "video_id": ann["video_id"], "category_id": ann["category_id"],
            "iscrowd": int(ann.get("iscrowd", 0)), "score": ann.get("score"), "rles": rles, "present": present,
            "pixels": pixels, "area": mean_area(areas)}


def video_iou_matrix(dts: Sequence[Dict[str, Any]], gts: Sequence[Dict[str, Any]]) -> np.ndarray:
    """(D, G) video IoU of prepared tracks (:func:`_track`): for each pair, over frames ``t < min(len_d, len_g)``,
    ``sum_t |d_t & g_t| / sum_t |d_t | g_t|`` (0 when the union is empty).

    Per frame, one pycocotools ``iou`` call over the present masks gives ``o = I / (a_d + a_g - I)``, hence the
    integer intersection ``I = round(o (a_d + a_g) / (1 + o))``; unions come from cumulative areas,
    ``U = sum_t a_d,t + sum_t a_g,t - sum_t I_t``. Both sums are exact integers, so the ratio is the reference's
    to the last bit.
    """
    D, G = len(dts), len(gts)
    if D == 0 or G == 0:
        return np.zeros((D, G))
    len_d = np.array([len(d["rles"]) for d in dts])
    len_g = np.array([len(g["rles"]) for g in gts])
    T = int(max(len_d.max(), len_g.max()))

    def padded(tracks: Sequence[Dict[str, Any]], key: str, dtype) -> np.ndarray:
        out = np.zeros((len(tracks), T), dtype=dtype)
        for i, tr in enumerate(tracks):
            out[i, :len(tr[key])] = tr[key]
        return out

    pd, pg = padded(dts, "present", bool), padded(gts, "present", bool)
    ad, ag = padded(dts, "pixels", np.int64), padded(gts, "pixels", np.int64)
    inter = np.zeros((D, G), dtype=np.int64)
    for t in range(int(min(len_d.max(), len_g.max()))):
        di, gi = np.flatnonzero(pd[:, t]), np.flatnonzero(pg[:, t])
        if di.size == 0 or gi.size == 0:
            continue
        o = np.asarray(mask_utils.iou([dts[i]["rles"][t] for i in di], [gts[j]["rles"][t] for j in gi],
                                      [0] * gi.size), dtype=np.float64).reshape(di.size, gi.size)
        if (o < 0).any():
            raise ValueError(f"frame {t}: masks of different sizes in one video")
        s = ad[di, t][:, None] + ag[gi, t][None, :]
        inter[np.ix_(di, gi)] += np.rint(o * s / (1.0 + o)).astype(np.int64)
    cum_d = np.concatenate([np.zeros((D, 1), np.int64), np.cumsum(ad, axis=1)], axis=1)
    cum_g = np.concatenate([np.zeros((G, 1), np.int64), np.cumsum(ag, axis=1)], axis=1)
    n = np.minimum(len_d[:, None], len_g[None, :])
    union = cum_d[np.arange(D)[:, None], n] + cum_g[np.arange(G)[None, :], n] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def video_iou(dt_segmentations: Sequence[Optional[Union[RLE, list]]],
              gt_segmentations: Sequence[Optional[Union[RLE, list]]], height: int, width: int) -> float:
    """Video IoU of two instance tracks (per-frame segmentations, None where absent):
    ``sum_t |d_t & g_t| / sum_t |d_t | g_t|`` over ``t < min(len(d), len(g))``; 0 when the union is empty."""
    d = _track({"segmentations": list(dt_segmentations), "video_id": 0, "category_id": 0}, 1, (height, width))
    g = _track({"segmentations": list(gt_segmentations), "video_id": 0, "category_id": 0}, 1, (height, width))
    return float(video_iou_matrix([d], [g])[0, 0])


class VISEval(COCOeval):
    """``COCOeval`` on videos: the YouTube-VIS API's metric (module docstring).

    ``params.imgIds`` holds the video ids (every video of the ground truth, as the reference's
    ``vidIds``); ``_prepare`` builds video tracks (``area`` = ``avg_area``, ``ignore`` = ``iscrowd``, result
    ids = 1-based position in the results list) and ``computeIoU`` returns video IoUs. ``evaluateImg``,
    ``accumulate`` and ``summarize`` are pycocotools' own. The inputs are not modified.
    """

    def __init__(self, gt: Dict[str, Any], results: Sequence[Dict[str, Any]]) -> None:
        super().__init__(None, None, iouType="segm")
        self.gt_data, self.results = gt, list(results)
        self.params.imgIds = sorted(v["id"] for v in gt["videos"])
        self.params.catIds = sorted(c["id"] for c in gt["categories"])
        self.params.areaRng = [list(r) for r in AREA_RANGES]
        self.params.areaRngLbl = list(AREA_LABELS)

    def _prepare(self) -> None:
        p = self.params
        sizes = {v["id"]: (v["height"], v["width"]) for v in self.gt_data["videos"]}
        videos, cats = set(p.imgIds), set(p.catIds)

        def wanted(ann: Dict[str, Any]) -> bool:
            return ann["video_id"] in videos and (not p.useCats or ann["category_id"] in cats)

        gts = [_track(a, a["id"], sizes[a["video_id"]], a.get("areas")) for a in self.gt_data["annotations"]
               if wanted(a)]
        dts = [_track(r, k + 1, sizes[r["video_id"]]) for k, r in enumerate(self.results) if wanted(r)]
        self._gts, self._dts = defaultdict(list), defaultdict(list)
        for g in gts:
            g["ignore"] = g["iscrowd"]
            self._gts[g["video_id"], g["category_id"]].append(g)
        for d in dts:
            self._dts[d["video_id"], d["category_id"]].append(d)
        self.evalImgs = defaultdict(list)
        self.eval = {}

    def computeIoU(self, imgId: int, catId: int):  # noqa: N802 (COCOeval's name)
        p = self.params
        if p.useCats:
            gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
        else:
            gt = [g for c in p.catIds for g in self._gts[imgId, c]]
            dt = [d for c in p.catIds for d in self._dts[imgId, c]]
        if len(gt) == 0 and len(dt) == 0:
            return []
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in order][: p.maxDets[-1]]
        return video_iou_matrix(dt, gt)

    def run(self) -> np.ndarray:
        """``evaluate``, ``accumulate``, ``summarize`` (their printing silenced); returns the 12 ``stats``."""
        with contextlib.redirect_stdout(io.StringIO()):
            self.evaluate()
            self.accumulate()
            self.summarize()
        return self.stats


@dataclass
class VISResult:
    """Scores of one evaluation: the 12 summary numbers (``-1`` where undefined, as the reference), AP per
    category name (``None`` for a category without ground truth) and what was scored."""

    stats: Dict[str, float]
    per_category: Dict[str, Optional[float]] = field(default_factory=dict)
    videos: int = 0
    categories: int = 0
    instances: int = 0
    predictions: int = 0

    def to_dict(self) -> Dict[str, Any]:
        return {"task": "vis", "stats": dict(self.stats), "per_category_AP": dict(self.per_category),
                "videos": self.videos, "categories": self.categories, "instances": self.instances,
                "predictions": self.predictions}


def evaluate_vis(gt: Dict[str, Any], results: Sequence[Dict[str, Any]]) -> VISResult:
    """Score ``results`` against ``gt`` (both validated or built by this module) as the YouTube-VIS API does."""
    evaluator = VISEval(gt, results)
    stats = evaluator.run()
    precision = evaluator.eval["precision"]  # (T, R, K, A, M); area "all", maxDets 100
    names = {c["id"]: str(c.get("name", c["id"])) for c in gt["categories"]}
    per_category: Dict[str, Optional[float]] = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        s = precision[:, :, k, 0, -1]
        per_category[names[cat_id]] = float(np.mean(s[s > -1])) if (s > -1).any() else None
    return VISResult(stats={n: float(v) for n, v in zip(STAT_NAMES, stats)}, per_category=per_category,
                     videos=len(gt["videos"]), categories=len(gt["categories"]),
                     instances=len(gt["annotations"]), predictions=len(results))


def evaluate_vis_files(gt_path: PathLike, pred_path: PathLike) -> VISResult:
    """Read, validate and score a ground-truth JSON and a results JSON (errors name the file)."""
    gt = read_vis_gt(gt_path)
    return evaluate_vis(gt, read_vis_results(pred_path, gt))


def format_vis_table(result: VISResult) -> str:
    """The 12 summary lines in the reference's wording, then AP per category."""
    labels = [("Average Precision", "0.50:0.95", "all", 100), ("Average Precision", "0.50", "all", 100),
              ("Average Precision", "0.75", "all", 100), ("Average Precision", "0.50:0.95", "small", 100),
              ("Average Precision", "0.50:0.95", "medium", 100), ("Average Precision", "0.50:0.95", "large", 100),
              ("Average Recall", "0.50:0.95", "all", 1), ("Average Recall", "0.50:0.95", "all", 10),
              ("Average Recall", "0.50:0.95", "all", 100), ("Average Recall", "0.50:0.95", "small", 100),
              ("Average Recall", "0.50:0.95", "medium", 100), ("Average Recall", "0.50:0.95", "large", 100)]
    title = (f"YouTube-VIS evaluation ({result.videos} videos, {result.categories} categories, "
             f"{result.instances} instances, {result.predictions} predictions)")
    lines = [title]
    for (kind, iou, area, dets), name in zip(labels, STAT_NAMES):
        short = "(AP)" if kind.endswith("Precision") else "(AR)"
        lines.append(f" {kind:<18} {short} @[ IoU={iou:<9} | area={area:>6s} | maxDets={dets:>3d} ] = "
                     f"{result.stats[name]:0.3f}")
    if result.per_category:
        width = max(len(n) for n in result.per_category)
        lines.append("AP per category:")
        lines += [f"  {n.ljust(width)}  " + ("   n/a" if v is None else f"{v:0.4f}")
                  for n, v in result.per_category.items()]
    summary = "   ".join(f"{n} {result.stats[n]:.4f}" for n in ("AP", "AP50", "AP75", "AR1", "AR10"))
    return "\n".join(lines + [summary])


# --------------------------------------------------------------------------------------------- DAVIS -> VIS


def davis_to_vis(collection) -> Dict[str, Any]:
    """A YouTube-VIS ground truth of class-agnostic instance tracks from a DAVIS :class:`VideoCollection`.

    Videos get ids 1..N in collection order (``file_names`` ``<video>/<frame file>``); one category,
    ``{"id": 1, "name": "object"}``; one annotation per (video, object id) over the annotated frames
    (void 255 and background 0 excluded), with ``segmentations[t]`` the RLE of ``mask_t == id`` and ``None``
    on frames where the object has no pixel or that carry no annotation; ``areas`` and ``bboxes`` follow, and
    ``object_id`` keeps the DAVIS id. Annotation ids run 1.. over the whole collection.
    """
    videos, annotations = [], []
    for vid, video in enumerate(collection, start=1):
        n = len(video)
        annotated = [i for i in video.annotated_indices() if 0 <= i < n] if video.has_masks else []
        masks: Dict[int, np.ndarray] = {}
        for i in annotated:
            m = video.mask(i)
            if m is not None:
                masks[i] = np.asarray(m)
        size = next(iter(masks.values())).shape[:2] if masks else video.frame(0).shape[:2]
        paths = getattr(video, "frame_paths", None)
        names = [f"{video.name}/{p.name}" for p in paths] if paths else \
            [f"{video.name}/{stem}.jpg" for stem in video.frame_names]
        videos.append({"id": vid, "name": video.name, "height": int(size[0]), "width": int(size[1]),
                       "length": n, "file_names": names})
        void = getattr(video, "void_value", 255)
        object_ids = sorted({int(v) for m in masks.values() for v in np.unique(m) if v not in (0, void)})
        for obj in object_ids:
            segs: List[Optional[RLE]] = [None] * n
            for i, m in masks.items():
                if m.shape[:2] != tuple(size):
                    raise SelfvosInputError(video.source or video.name, f"mask of frame {video.frame_names[i]} is "
                                                                        f"{m.shape[1]}x{m.shape[0]} (WxH), not "
                                                                        f"{size[1]}x{size[0]}")
                sel = m == obj
                if sel.any():
                    segs[i] = encode_rle(sel)
            annotations.append({"id": len(annotations) + 1, "video_id": vid, "category_id": 1, "iscrowd": 0,
                                "object_id": obj, "height": int(size[0]), "width": int(size[1]), "length": n,
                                "segmentations": segs, "areas": frame_areas(segs), "bboxes": frame_bboxes(segs)})
    return {"info": {"description": "class-agnostic instance tracks converted from DAVIS"},
            "videos": videos, "categories": [dict(OBJECT_CATEGORY)], "annotations": annotations}
