"""First-frame masks from prompts: a box and/or clicks per object, turned into an id mask to propagate.

Prompts are in pixels of the input frame (x = column, y = row):

- a box ``(x0, y0, x1, y1)`` covers columns ``x0 .. x1 - 1`` and rows ``y0 .. y1 - 1`` (``x1``, ``y1`` exclusive,
  so the tight box of a mask is ``(xmin, ymin, xmax + 1, ymax + 1)``): the object lies inside it;
- a click ``(x, y, label)``: ``label`` 1 = the pixel belongs to the object, 0 = it does not.

Object ``i + 1`` is ``boxes[i]`` and/or ``points[i]`` (a list of clicks); either may be missing for an object
(``boxes`` shorter than ``points``, an empty click list), but every object needs a box or a positive click.

:func:`mask_from_prompts` segments each object with an iterated graph cut in the GrabCut manner
(Rother et al., 2004) on a crop around its box (the whole frame for clicks alone):

1. labels start as "the box interior" (clicks only: disks of ``click_extent`` x the short side around the
   positive clicks); outside the box is background for sure, a disk of ``click_radius`` px around a positive
   click is foreground for sure and around a negative click (or another object's positive click) background;
2. ``iterations`` times: fit a ``components``-Gaussian colour mixture (RGB, full covariance, k-means init) to
   the current foreground and one to the current background; unary cost of a label = its negative colour
   log-likelihood ``+ head_weight * -log p`` (``p`` the model's foreground probability for that label) ``+
   feature_weight * -log q`` (``q`` the backbone feature similarity to the current foreground against the
   background, see :func:`feature_probability`); pairwise = contrast-sensitive Potts of weight ``smoothness``
   (4-connected); the minimum cut gives the new labels (clicks alone: only the connected parts holding a
   positive click are kept);
3. the object's evidence at a pixel is its final unary log-odds ``cost(background) - cost(foreground)``.

Model evidence (:func:`model_evidence`): a MuG model's frame-head probability ``sigmoid(rho(phi(frame)))``
and its features ``phi``; a head checkpoint without a frame head (STM) gives the features of its backbone;
no model gives colour alone. Overlaps: objects are segmented independently and a pixel claimed by several is
given to the one with the highest evidence there (a positive click always keeps its own object's pixels),
so a later object never erases an earlier one wholesale.

:func:`save_prompt_mask` writes the ids as a palette PNG, :func:`prompt_preview` draws the mask, the boxes
and the clicks on the frame (:func:`save_preview` writes it), both atomically.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np

from selfvos.errors import PathLike, SelfvosInputError
from selfvos.inference.iet import graph_cut, pairwise_weights

Box = Tuple[int, int, int, int]
Click = Tuple[int, int, int]
BIG = 1e9  # a cost no cut pays: hard constraints
NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


# ------------------------------------------------------------------------------------------------- parsing


def _coordinate(text: str, what: str) -> int:
    """``text`` as a pixel coordinate (a finite number, rounded to the nearest integer)."""
    text = text.strip()
    if not NUMBER.match(text) or not math.isfinite(float(text)):
        raise ValueError(f"{what}: {text!r} is not a number")
    return int(round(float(text)))


def _parts(text: str, kind: str) -> List[str]:
    """``text`` split at ``;`` into non-empty entries (a trailing ``;`` is allowed)."""
    if not text or not text.strip():
        raise ValueError(f"no {kind} given (empty text)")
    entries = [p.strip() for p in text.split(";")]
    if entries[-1] == "" and len(entries) > 1:
        entries = entries[:-1]
    for k, entry in enumerate(entries):
        if not entry:
            raise ValueError(f"{kind} {k + 1} is empty in {text!r}")
    return entries


def parse_boxes(text: str) -> List[Box]:
    """``"x0,y0,x1,y1;x0,y0,x1,y1"`` -> one ``(x0, y0, x1, y1)`` per object, checked ``x0 < x1``, ``y0 < y1``.

    Raises ``ValueError`` naming the bad box (wrong count of numbers, not a number, empty box)."""
    boxes = []
    for k, entry in enumerate(_parts(text, "box")):
        numbers = entry.split(",")
        if len(numbers) != 4:
            raise ValueError(f"box {k + 1} {entry!r}: expected x0,y0,x1,y1 (4 numbers), got {len(numbers)}")
        x0, y0, x1, y1 = (_coordinate(n, f"box {k + 1} {entry!r}") for n in numbers)
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"box {k + 1} {entry!r}: needs x0 < x1 and y0 < y1 (x1, y1 exclusive)")
        boxes.append((x0, y0, x1, y1))
    return boxes


def parse_points(text: str) -> List[Click]:
    """``"x,y[,label];..."`` -> ``[(x, y, label), ...]``; ``label`` 1 (positive, the default) or 0 (negative).

    Raises ``ValueError`` naming the bad click."""
    clicks = []
    for k, entry in enumerate(_parts(text, "click")):
        numbers = entry.split(",")
        if len(numbers) not in (2, 3):
            raise ValueError(f"click {k + 1} {entry!r}: expected x,y or x,y,label, got {len(numbers)} numbers")
        x, y = (_coordinate(n, f"click {k + 1} {entry!r}") for n in numbers[:2])
        label = numbers[2].strip() if len(numbers) == 3 else "1"
        if label not in ("0", "1"):
            raise ValueError(f"click {k + 1} {entry!r}: label must be 1 (object) or 0 (not the object), "
                             f"got {label!r}")
        clicks.append((x, y, int(label)))
    return clicks


def check_prompts(boxes: Optional[Sequence[Box]], points: Optional[Sequence[Sequence[Click]]],
                  size: Tuple[int, int], box_option: str = "--box", points_option: str = "--points") -> int:
    """Check prompts against a frame of ``size`` (H, W); returns the number of objects.

    Raises ``SelfvosInputError`` whose path is ``box_option`` / ``points_option`` for: no prompt at all, an
    empty box or one reaching outside the frame, a click outside the frame or with a label other than 0/1,
    an object with neither a box nor a positive click (e.g. only negative clicks)."""
    boxes, points = list(boxes or []), [list(p) for p in (points or [])]
    height, width = size
    if not boxes and not any(points):
        raise SelfvosInputError(box_option, f"no prompt given: a box ({box_option}) or clicks ({points_option})")
    for k, box in enumerate(boxes):
        x0, y0, x1, y1 = box
        if x1 <= x0 or y1 <= y0:
            raise SelfvosInputError(box_option, f"box {k + 1} {tuple(box)} is empty (needs x0 < x1, y0 < y1)")
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise SelfvosInputError(box_option, f"box {k + 1} {tuple(box)} reaches outside the {width}x{height} "
                                                f"(WxH) frame (0 <= x0 < x1 <= {width}, 0 <= y0 < y1 <= {height})")
    for k, clicks in enumerate(points):
        for x, y, label in clicks:
            if not (0 <= x < width and 0 <= y < height):
                raise SelfvosInputError(points_option, f"click ({x},{y}) of object {k + 1} lies outside the "
                                                       f"{width}x{height} (WxH) frame")
            if label not in (0, 1):
                raise SelfvosInputError(points_option, f"click ({x},{y}) of object {k + 1}: label {label} "
                                                       "is not 0 or 1")
    count = max(len(boxes), len(points))
    for k in range(count):
        has_box = k < len(boxes)
        positives = k < len(points) and any(label == 1 for _, _, label in points[k])
        if not has_box and not positives:
            negatives = k < len(points) and bool(points[k])
            problem = "has only negative clicks" if negatives else "has no prompt"
            raise SelfvosInputError(points_option, f"object {k + 1} {problem}; give it a box or a positive click")
    return count


# ------------------------------------------------------------------------------------------------ settings


@dataclass
class PromptConfig:
    """Settings of :func:`mask_from_prompts` (see the module docstring for the method).

    iterations: colour-model / graph-cut rounds. components: Gaussians per colour mixture.
    smoothness: weight of the contrast-sensitive Potts term (GrabCut's 50).
    margin: the crop around a box grows by ``margin`` x its longer side + ``margin_px``; the background
        colour model sees only this surrounding (a local background model).
    head_weight: weight of the model's frame-head foreground probability in the unary (0 = colour alone).
    feature_weight: weight of the backbone feature similarity (0 = off); ``feature_prototypes`` k-means
        prototypes per side, similarity margin divided by ``feature_temperature``.
    evidence_short_side: the frame is resized so its short side is this before the model sees it.
    max_side: the crop is shrunk (area) so its longer side is at most this for the graph cut; the evidence
        is upsampled back (bilinear) and thresholded at the frame's size.
    click_radius: radius (px of the frame) of the sure disk around a click.
    click_extent: clicks without a box start from disks of this fraction of the frame's short side.

    The defaults were chosen on DAVIS-2016 *train* only (tight box of each first-frame mask, mean J, the
    default MuG model) by ``benchmarks/prompts_davis16.py --vary KEY=...``; the rows of every setting tried
    are in ``benchmarks/results/prompts_davis16.json``. ``click_radius`` and ``click_extent`` are not tuned
    (the benchmark prompts with boxes).
    """

    iterations: int = 10
    components: int = 5
    smoothness: float = 50.0
    margin: float = 0.15
    margin_px: int = 8
    head_weight: float = 0.5
    feature_weight: float = 0.0
    feature_prototypes: int = 4
    feature_temperature: float = 0.05
    evidence_short_side: int = 480
    max_side: int = 640
    click_radius: int = 5
    click_extent: float = 0.15

    def validate(self) -> "PromptConfig":
        if self.iterations < 1 or self.components < 1 or self.feature_prototypes < 1:
            raise ValueError("iterations, components and feature_prototypes must be >= 1")
        if self.evidence_short_side < 8 or self.max_side < 8:
            raise ValueError("evidence_short_side and max_side must be >= 8")
        for name in ("smoothness", "margin", "margin_px", "head_weight", "feature_weight", "click_radius",
                     "click_extent"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.feature_temperature > 0:
            raise ValueError(f"feature_temperature must be > 0, got {self.feature_temperature}")
        return self


# ------------------------------------------------------------------------------------------- model evidence


class Evidence(NamedTuple):
    """What a model says about a frame: ``probability`` (H, W) float32 frame-head foreground probability at
    the frame's size, ``features`` (C, h, w) float32 unit-norm backbone features; either None when absent."""

    probability: Optional[np.ndarray]
    features: Optional[np.ndarray]


def _backbone_features(model: Any, image: Any) -> Any:
    """(1, 3, h, w) in [0, 1] -> (1, C, h', w') features of a head's backbone (its deepest returned layer)."""
    feats = model.backbone(model.normalize(image))
    return feats[model.backbone.return_layers[-1]]


def model_evidence(model: Any, frame: np.ndarray, cfg: PromptConfig) -> Evidence:
    """(H, W, 3) uint8 RGB -> :class:`Evidence` from ``model`` (None: none), one backbone call at
    ``evidence_short_side``. A model with ``encode`` + ``frame_logits`` (MuG) gives both maps, a head with a
    ``backbone`` features only; maps whose weight is 0 are not computed."""
    import torch
    import torch.nn.functional as F

    want_head = cfg.head_weight > 0 and hasattr(model, "frame_logits") and hasattr(model, "encode")
    want_features = cfg.feature_weight > 0 and (hasattr(model, "encode") or hasattr(model, "backbone"))
    if model is None or not (want_head or want_features):
        return Evidence(None, None)
    height, width = frame.shape[:2]
    scale = cfg.evidence_short_side / min(height, width)
    size = (max(8, round(height * scale)), max(8, round(width * scale)))
    device = next(model.parameters()).device
    image = torch.from_numpy(np.ascontiguousarray(frame)).to(device).permute(2, 0, 1)[None].float() / 255
    image = F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            features = model.encode(image) if hasattr(model, "encode") else _backbone_features(model, image)
            probability = torch.sigmoid(model.frame_logits(features))[0, 0].float() if want_head else None
    finally:
        model.train(was_training)
    if probability is not None:
        probability = cv2.resize(probability.cpu().numpy(), (width, height), interpolation=cv2.INTER_LINEAR)
    unit = None
    if want_features:
        unit = F.normalize(features[0].float(), dim=0).cpu().numpy()
    return Evidence(probability, unit)


# --------------------------------------------------------------------------------------- colour and features


def gaussian_mixture_nll(values: np.ndarray, select: np.ndarray, components: int,
                         max_samples: int = 20000) -> np.ndarray:
    """Negative log-likelihood of every row of ``values`` (N, D) under a ``components``-Gaussian mixture
    (full covariance, k-means init, fixed seed) fitted to the rows where ``select`` (N,) bool; (N,) float64.
    At most ``max_samples`` rows (evenly strided) are used for the fit."""
    rows = np.flatnonzero(select)
    if len(rows) > max_samples:
        rows = rows[np.linspace(0, len(rows) - 1, max_samples).astype(int)]
    samples = values[rows].astype(np.float32)
    if len(samples) < 2:  # nothing to fit: a flat model
        return np.zeros(len(values))
    k = max(1, min(components, len(samples)))
    cv2.setRNGSeed(0)
    criteria = (cv2.TERM_CRITERIA_MAX_ITER + cv2.TERM_CRITERIA_EPS, 10, 1e-3)
    _, labels, _ = cv2.kmeans(samples, k, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    labels, dim = labels.ravel(), values.shape[1]
    log_parts = []
    for j in range(k):
        part = samples[labels == j].astype(np.float64)
        if len(part) < 2:
            continue
        mean = part.mean(0)
        cov = np.cov(part.T).reshape(dim, dim) + 1e-4 * np.eye(dim)
        _, logdet = np.linalg.slogdet(cov)
        diff = values - mean
        mahalanobis = np.einsum("nd,de,ne->n", diff, np.linalg.inv(cov), diff)
        log_parts.append(math.log(len(part) / len(samples)) - 0.5 * (mahalanobis + logdet + dim * math.log(2 * math.pi)))
    if not log_parts:  # fewer than 2 samples: a flat model
        return np.zeros(len(values))
    stacked = np.stack(log_parts)
    top = stacked.max(0)
    return -(top + np.log(np.exp(stacked - top).sum(0)))


def _prototypes(cells: np.ndarray, count: int) -> np.ndarray:
    """(N, C) unit features -> (k, C) unit k-means centres, k <= count."""
    samples = cells.astype(np.float32)
    if len(samples) < 2:
        return samples / (np.linalg.norm(samples, axis=1, keepdims=True) + 1e-6)
    k = max(1, min(count, len(samples)))
    cv2.setRNGSeed(0)
    criteria = (cv2.TERM_CRITERIA_MAX_ITER + cv2.TERM_CRITERIA_EPS, 10, 1e-3)
    _, _, centres = cv2.kmeans(samples, k, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    return centres / (np.linalg.norm(centres, axis=1, keepdims=True) + 1e-6)


def feature_probability(features: np.ndarray, foreground: np.ndarray, region: np.ndarray,
                        cfg: PromptConfig) -> Optional[np.ndarray]:
    """Foreground probability from feature similarity at the feature grid, (h, w) float32 or None.

    ``features`` (C, h, w) unit-norm; ``foreground`` / ``region`` (h, w) bool: the current object and the
    cells the background may come from. ``sigmoid((max_k cos(f, fg_k) - max_k cos(f, bg_k)) / T)`` with
    ``fg_k`` / ``bg_k`` the k-means prototypes of the object's and the region's other cells. None when a
    side has no cell."""
    background = region & ~foreground
    if not foreground.any() or not background.any():
        return None
    cells = features.reshape(len(features), -1).T
    fg = (cells @ _prototypes(cells[foreground.ravel()], cfg.feature_prototypes).T).max(1)
    bg = (cells @ _prototypes(cells[background.ravel()], cfg.feature_prototypes).T).max(1)
    return (1 / (1 + np.exp(-(fg - bg) / cfg.feature_temperature))).reshape(features.shape[1:]).astype(np.float32)


# ----------------------------------------------------------------------------------------- one object


@dataclass
class _Crop:
    """Where one object is segmented: rows ``top:bottom``, columns ``left:right`` of a frame of
    ``frame_height`` x ``frame_width``, worked on at ``scale`` (work size / frame size)."""

    top: int
    bottom: int
    left: int
    right: int
    scale: float
    frame_height: int
    frame_width: int

    @property
    def work_size(self) -> Tuple[int, int]:
        return (max(1, round((self.bottom - self.top) * self.scale)), max(1, round((self.right - self.left) * self.scale)))

    def to_work(self, x: float, y: float) -> Tuple[int, int]:
        """Frame pixel -> (column, row) in the work crop."""
        h, w = self.work_size
        return (min(w - 1, int((x - self.left + 0.5) * self.scale)), min(h - 1, int((y - self.top + 0.5) * self.scale)))

    def cut(self, image: np.ndarray, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
        """(H, W, ...) frame-sized array -> the crop at the work size."""
        part = np.ascontiguousarray(image[self.top:self.bottom, self.left:self.right])
        h, w = self.work_size
        if part.shape[:2] == (h, w):
            return part
        return cv2.resize(part, (w, h), interpolation=interpolation)


def _crop_for(box: Optional[Box], size: Tuple[int, int], cfg: PromptConfig) -> _Crop:
    """The crop around ``box`` grown by the margin (the whole frame without a box), shrunk to ``max_side``."""
    height, width = size
    if box is None:
        top, bottom, left, right = 0, height, 0, width
    else:
        x0, y0, x1, y1 = box
        grow = int(round(cfg.margin * max(x1 - x0, y1 - y0))) + cfg.margin_px
        top, bottom, left, right = max(y0 - grow, 0), min(y1 + grow, height), max(x0 - grow, 0), min(x1 + grow, width)
    scale = min(1.0, cfg.max_side / max(bottom - top, right - left))
    return _Crop(top, bottom, left, right, scale, height, width)


def _disks(crop: _Crop, clicks: Sequence[Tuple[int, int]], radius: float) -> np.ndarray:
    """(h, w) bool work-crop map of the disks of ``radius`` frame pixels around ``clicks`` inside the crop."""
    out = np.zeros(crop.work_size, np.uint8)
    for x, y in clicks:
        if crop.left <= x < crop.right and crop.top <= y < crop.bottom:
            cv2.circle(out, crop.to_work(x, y), max(0, int(round(radius * crop.scale))), 1, thickness=-1)
    return out > 0


def _clicked_parts(mask: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """The 8-connected components of ``mask`` (h, w) bool that hold a pixel of ``positive``."""
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    keep = np.unique(labels[positive & mask])
    return np.isin(labels, keep[keep > 0])


class _Unary(NamedTuple):
    """Per-pixel costs of the two labels over the work crop, (h, w) float64 each, without hard constraints."""

    foreground: np.ndarray
    background: np.ndarray


def _unary(colours: np.ndarray, labels: np.ndarray, head: Optional[np.ndarray], evidence: Evidence,
           crop: _Crop, feature_region: Optional[np.ndarray], cfg: PromptConfig) -> _Unary:
    """Colour-mixture costs from the current ``labels`` (h, w) bool, plus the model terms."""
    flat = colours.reshape(-1, 3)
    cost_fg = gaussian_mixture_nll(flat, labels.ravel(), cfg.components).reshape(labels.shape)
    cost_bg = gaussian_mixture_nll(flat, ~labels.ravel(), cfg.components).reshape(labels.shape)
    low = np.minimum(cost_fg, cost_bg)
    cost_fg, cost_bg = cost_fg - low, cost_bg - low
    if head is not None:
        cost_fg = cost_fg - cfg.head_weight * np.log(head)
        cost_bg = cost_bg - cfg.head_weight * np.log1p(-head)
    if evidence.features is not None and feature_region is not None:
        grid = feature_region.shape
        # the current labels carried to the feature grid through the frame: > half a cell = foreground
        work = cv2.resize(labels.astype(np.float32), (crop.right - crop.left, crop.bottom - crop.top))
        full = np.zeros((crop.frame_height, crop.frame_width), np.float32)
        full[crop.top:crop.bottom, crop.left:crop.right] = work
        frame_labels = cv2.resize(full, (grid[1], grid[0]), interpolation=cv2.INTER_AREA) > 0.5
        q = feature_probability(evidence.features, frame_labels, feature_region, cfg)
        if q is not None:
            q = crop.cut(cv2.resize(q, (crop.frame_width, crop.frame_height), interpolation=cv2.INTER_LINEAR),
                         cv2.INTER_LINEAR)
            q = np.clip(q, 1e-3, 1 - 1e-3)
            cost_fg = cost_fg - cfg.feature_weight * np.log(q)
            cost_bg = cost_bg - cfg.feature_weight * np.log1p(-q)
    return _Unary(cost_fg, cost_bg)


def _feature_region(crop: _Crop, evidence: Evidence) -> Optional[np.ndarray]:
    """(h, w) bool cells of the feature grid inside the crop (None without features)."""
    if evidence.features is None:
        return None
    h, w = evidence.features.shape[1:]
    region = np.zeros((h, w), bool)
    sy, sx = h / crop.frame_height, w / crop.frame_width
    region[int(crop.top * sy):max(int(crop.top * sy) + 1, math.ceil(crop.bottom * sy)),
           int(crop.left * sx):max(int(crop.left * sx) + 1, math.ceil(crop.right * sx))] = True
    return region


def segment_object(frame: np.ndarray, box: Optional[Box], clicks: Sequence[Click],
                   blocked: Sequence[Tuple[int, int]], evidence: Evidence,
                   cfg: PromptConfig) -> Tuple[np.ndarray, np.ndarray]:
    """One object from its box and/or clicks: frame (H, W, 3) uint8 -> (mask (H, W) bool, evidence (H, W)
    float32 = unary log-odds of the object, ``-inf`` outside its crop, ``+BIG`` on its positive clicks).

    ``blocked``: pixels (x, y) that are sure background for this object (other objects' positive clicks)."""
    height, width = frame.shape[:2]
    crop = _crop_for(box, (height, width), cfg)
    shape = crop.work_size
    colours = crop.cut(frame).astype(np.float64) / 255
    positive = _disks(crop, [(x, y) for x, y, label in clicks if label == 1], cfg.click_radius)
    negative = _disks(crop, [(x, y) for x, y, label in clicks if label == 0] + list(blocked), cfg.click_radius)
    sure_bg = negative.copy()
    if box is not None:
        x0, y0, x1, y1 = box
        (c0, r0), (c1, r1) = crop.to_work(x0, y0), crop.to_work(x1 - 1, y1 - 1)
        inside = np.zeros(shape, bool)
        inside[r0:r1 + 1, c0:c1 + 1] = True
        sure_bg |= ~inside
        labels = inside & ~negative
    else:
        start = _disks(crop, [(x, y) for x, y, label in clicks if label == 1], cfg.click_extent * min(height, width))
        labels = start & ~negative
    labels |= positive
    head = None
    if evidence.probability is not None:
        head = np.clip(crop.cut(evidence.probability, cv2.INTER_LINEAR), 1e-3, 1 - 1e-3).astype(np.float64)
    feature_region = _feature_region(crop, evidence)
    right, down = pairwise_weights(colours, cfg.smoothness)
    unary = None
    for _ in range(cfg.iterations):
        if not (labels & ~sure_bg).any() or labels.all():
            break
        unary = _unary(colours, labels, head, evidence, crop, feature_region, cfg)
        cost_fg = np.where(sure_bg & ~positive, BIG, unary.foreground)
        cost_bg = np.where(positive, BIG, unary.background)
        labels = graph_cut(cost_fg, cost_bg, right, down)
        if box is None:
            labels = _clicked_parts(labels, positive)
    score = np.full(shape, -BIG) if unary is None else unary.background - unary.foreground
    score = np.where(positive, BIG, np.where(labels, np.maximum(score, 1e-3), np.minimum(score, -1e-3)))
    return _paste(score.astype(np.float32), crop)


def _paste(score: np.ndarray, crop: _Crop) -> Tuple[np.ndarray, np.ndarray]:
    """Work-crop evidence (h, w) -> (mask, evidence) at the frame size: bilinear upsampling, mask = evidence > 0,
    ``-inf`` outside the crop."""
    height, width = crop.bottom - crop.top, crop.right - crop.left
    if score.shape != (height, width):
        score = cv2.resize(np.clip(score, -1e4, 1e4), (width, height), interpolation=cv2.INTER_LINEAR)
    full = np.full((crop.frame_height, crop.frame_width), -np.inf, np.float32)
    full[crop.top:crop.bottom, crop.left:crop.right] = score
    return full > 0, full


# -------------------------------------------------------------------------------------------- all objects


def resolve_overlaps(masks: Sequence[np.ndarray], scores: Sequence[np.ndarray]) -> np.ndarray:
    """Per-object masks (K of (H, W) bool) and evidence (K of (H, W) float) -> (H, W) uint8 ids 0..K: each
    pixel goes to the object with the highest evidence among those whose mask holds it (ties: the lower id);
    0 where no mask does."""
    stacked = np.stack([np.where(m, s, -np.inf) for m, s in zip(masks, scores)])
    claimed = np.stack(masks).any(0)
    return np.where(claimed, stacked.argmax(0) + 1, 0).astype(np.uint8)


def _per_object(boxes: Optional[Sequence[Box]], points: Optional[Sequence[Sequence[Click]]]
                ) -> List[Tuple[Optional[Box], List[Click]]]:
    """(box or None, clicks) of every object, in id order."""
    boxes, points = list(boxes or []), [list(p) for p in (points or [])]
    count = max(len(boxes), len(points))
    return [(tuple(boxes[k]) if k < len(boxes) else None, points[k] if k < len(points) else [])
            for k in range(count)]


def mask_from_prompts(frame: np.ndarray, boxes: Optional[Sequence[Box]] = None,
                      points: Optional[Sequence[Sequence[Click]]] = None, model: Any = None,
                      cfg: Optional[PromptConfig] = None) -> np.ndarray:
    """First-frame ids from prompts: frame (H, W, 3) uint8 RGB -> (H, W) uint8, object ``i + 1`` from
    ``boxes[i]`` and/or ``points[i]`` (its clicks ``(x, y, label)``), see the module docstring.

    ``model``: a selfvos model whose evidence joins the colour model (:func:`model_evidence`), or None.
    Prompts are checked first (:func:`check_prompts`: ``SelfvosInputError``). An object whose segmentation
    comes out empty keeps no pixel (its id is then absent from the result)."""
    cfg = (cfg or PromptConfig()).validate()
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
    check_prompts(boxes, points, frame.shape[:2])
    objects = _per_object(boxes, points)
    evidence = model_evidence(model, frame, cfg) if model is not None else Evidence(None, None)
    masks, scores = [], []
    for k, (box, clicks) in enumerate(objects):
        blocked = [(x, y) for j, (_, other) in enumerate(objects) if j != k for x, y, label in other if label == 1]
        mask, score = segment_object(frame, box, clicks, blocked, evidence, cfg)
        masks.append(mask)
        scores.append(score)
    return resolve_overlaps(masks, scores)


# -------------------------------------------------------------------------------------------------- output


def save_prompt_mask(ids: np.ndarray, path: PathLike) -> Path:
    """Write (H, W) uint8 ids as a DAVIS-palette PNG at ``path``, atomically; returns the path."""
    from selfvos.data.writers import save_palette_png

    return save_palette_png(path, np.asarray(ids, dtype=np.uint8))


def prompt_preview(frame: np.ndarray, ids: np.ndarray, boxes: Optional[Sequence[Box]] = None,
                   points: Optional[Sequence[Sequence[Click]]] = None) -> np.ndarray:
    """The prompt mask on the frame: frame (H, W, 3) uint8 RGB, ids (H, W) -> (H, W, 3) uint8 with each object
    blended and outlined in its palette colour (:func:`selfvos.inference.io.render_overlay`), its box drawn
    in that colour (2 px), positive clicks as filled dots of that colour ringed in white, negative clicks as
    black dots ringed in that colour."""
    from selfvos.data.writers import DAVIS_PALETTE
    from selfvos.inference.io import render_overlay

    image = np.ascontiguousarray(render_overlay(frame, ids))
    radius = max(3, round(min(image.shape[:2]) / 100))
    for k, (box, clicks) in enumerate(_per_object(boxes, points)):
        colour = tuple(int(c) for c in DAVIS_PALETTE[(k + 1) % 256])
        if box is not None:
            cv2.rectangle(image, (box[0], box[1]), (box[2] - 1, box[3] - 1), colour, 2)
        for x, y, label in clicks:
            inner, ring = (colour, (255, 255, 255)) if label == 1 else ((0, 0, 0), colour)
            cv2.circle(image, (x, y), radius, inner, thickness=-1)
            cv2.circle(image, (x, y), radius, ring, thickness=max(1, radius // 3))
    return image


def save_preview(image: np.ndarray, path: PathLike) -> Path:
    """Write an (H, W, 3) uint8 RGB image as a PNG at ``path``, atomically; returns the path."""
    from PIL import Image

    from selfvos.atomic import atomic_write_bytes, naming_path

    with naming_path(path):
        return atomic_write_bytes(path, lambda fh: Image.fromarray(np.asarray(image, np.uint8)).save(fh, format="PNG"))
