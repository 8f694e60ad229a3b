"""Fusion of appearance and motion saliency into one soft pseudo-mask, plus its clean-up.

``FusedSaliency`` for frame t:
1. ``m`` = motion saliency (:class:`~selfvos.pseudo.motion.MotionSaliency`, camera motion removed);
   ``a`` = two-stage manifold-ranking appearance saliency;
   ``r`` = manifold ranking with the motion mask's superpixels as foreground queries, which spreads
   the motion evidence over the appearance-coherent object (and drops isolated flow noise).
2. ``soft = w_motion * m + w_rank * r + w_appearance * a`` (weights sum to 1).
3. Clean-up of ``soft >= 0.5``: keep the largest connected component and the others at least
   ``min_component_fraction`` of its area, fill holes.
4. Optional colour-model refinement: OpenCV GrabCut initialised from the cleaned mask (sure
   foreground where ``soft`` is high and inside the mask, sure background far from it).
Constants picked on davis2016-train-240p GT (every 10th frame, mean per-sequence J of the binary mask):
motion alone 0.50; + component clean-up 0.51; weights (m, r, a) = (0.5, 0.5, 0) 0.52, (0.7, 0.3, 0) 0.53,
(0.4, 0.4, 0.2) 0.52 (plain appearance saliency does not help); + GrabCut: (0.5, 0.5) 0.585, (0.7, 0.3)
0.60; GrabCut ``sure_fg`` 0.7 / 0.8 / 0.9 and ``band_px`` 15 / 30 change J by < 0.015.
The returned soft map is ``soft`` restricted to the refined mask's support, rescaled so that every pixel
of the binary mask is >= 0.5 and every pixel outside it is < 0.5: ``soft >= 0.5`` is the binary mask.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import cv2
import numpy as np

from selfvos.data.video import LazyVideo
from selfvos.pseudo.base import PseudoLabeler, downscale, upsample_map
from selfvos.pseudo.motion import MotionSaliency
from selfvos.pseudo.saliency_mr import ManifoldRankingSaliency


def keep_largest_components(binary: np.ndarray, min_fraction: float = 0.2) -> np.ndarray:
    """Keep the largest 8-connected component of ``binary`` (H, W) and those at least ``min_fraction``
    of its area; returns bool (H, W)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros(binary.shape, bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= min_fraction * areas.max()) + 1
    return np.isin(labels, keep)


def fill_holes(binary: np.ndarray) -> np.ndarray:
    """Fill background regions of ``binary`` (H, W) that do not touch the image border."""
    from scipy.ndimage import binary_fill_holes

    return binary_fill_holes(binary)


def grabcut_refine(frame: np.ndarray, mask: np.ndarray, soft: np.ndarray, *, iterations: int = 3,
                   sure_fg: float = 0.8, band_px: int = 15, margin_px: Optional[int] = None) -> np.ndarray:
    """Refine ``mask`` (H, W) bool with a GrabCut colour model on ``frame`` (H, W, 3) uint8 RGB.

    Pixels of ``mask`` with ``soft >= sure_fg`` are sure foreground; pixels further than ``band_px`` from
    ``mask`` are sure background; the rest is "probably" whatever ``mask`` says. ``margin_px``: run GrabCut
    on the box around the uncertain band grown by this many pixels of sure background (its background
    colour model then sees the object's surroundings only; the pixels outside stay background); None: on
    the whole frame. Returns bool (H, W); an empty mask, or a GrabCut failure, returns ``mask`` unchanged.
    """
    if not mask.any() or mask.all():
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band_px + 1, 2 * band_px + 1))
    near = cv2.dilate(mask.astype(np.uint8), kernel) > 0
    gc = np.full(mask.shape, cv2.GC_BGD, np.uint8)
    gc[near] = cv2.GC_PR_BGD
    gc[mask] = cv2.GC_PR_FGD
    gc[mask & (soft >= sure_fg)] = cv2.GC_FGD
    box = (slice(None), slice(None))
    if margin_px is not None:
        rows, cols = np.flatnonzero(near.any(1)), np.flatnonzero(near.any(0))
        box = (slice(max(rows[0] - margin_px, 0), rows[-1] + margin_px + 1),
               slice(max(cols[0] - margin_px, 0), cols[-1] + margin_px + 1))
    region = np.ascontiguousarray(gc[box])
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut's k-means init draws from OpenCV's global RNG: same input -> same mask, always
    try:
        cv2.grabCut(cv2.cvtColor(np.ascontiguousarray(frame[box]), cv2.COLOR_RGB2BGR), region, None, bgd, fgd,
                    iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return mask
    gc[box] = region
    return (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)


def soft_from_binary(soft: np.ndarray, binary: np.ndarray) -> np.ndarray:
    """A soft map consistent with ``binary``: inside, ``0.5 + soft / 2``; outside, ``min(soft, 0.49)``."""
    return np.where(binary, 0.5 + 0.5 * soft, np.minimum(soft, 0.49)).astype(np.float32)


@dataclass
class FusedSaliency(PseudoLabeler):
    """Appearance + motion pseudo-masks; ``__call__`` -> soft (H, W) float32, ``binary(...)`` -> bool."""

    w_motion: float = 0.7
    w_rank: float = 0.3
    w_appearance: float = 0.0
    min_component_fraction: float = 0.2
    grabcut_iterations: int = 3
    max_side: int = 0
    cache_dir: Optional[str] = None
    name: str = field(default="fused", init=False)

    def __post_init__(self) -> None:
        total = self.w_motion + self.w_rank + self.w_appearance
        if total <= 0:
            raise ValueError("fusion weights must sum to a positive number")
        self.w_motion, self.w_rank, self.w_appearance = (w / total for w in (self.w_motion, self.w_rank, self.w_appearance))
        self.motion = MotionSaliency(max_side=self.max_side, cache_dir=self.cache_dir)
        self.appearance = ManifoldRankingSaliency()

    def fuse(self, frame: np.ndarray, motion: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Fuse at the working resolution: ``frame`` (h, w, 3) uint8, ``motion`` (h, w) -> (soft, binary)."""
        soft = self.w_motion * motion
        if self.w_rank > 0:
            soft = soft + self.w_rank * self.appearance.rank_from_prior(frame, motion)
        if self.w_appearance > 0:
            soft = soft + self.w_appearance * self.appearance.saliency(frame)
        binary = fill_holes(keep_largest_components(soft >= 0.5, self.min_component_fraction))
        if self.grabcut_iterations > 0:
            binary = grabcut_refine(frame, binary, soft, iterations=self.grabcut_iterations)
            binary = fill_holes(keep_largest_components(binary, self.min_component_fraction))
        return soft_from_binary(soft, binary), binary

    def __call__(self, video: LazyVideo, index: int) -> np.ndarray:
        full = video.frame(index)
        frame = downscale(full, self.max_side)
        motion = upsample_map(self.motion(video, index), frame.shape[:2])
        soft, _ = self.fuse(frame, motion)
        return upsample_map(soft, full.shape[:2])

    def config(self) -> Dict[str, object]:
        return {"type": self.name, "w_motion": self.w_motion, "w_rank": self.w_rank, "w_appearance": self.w_appearance,
                "min_component_fraction": self.min_component_fraction, "grabcut_iterations": self.grabcut_iterations,
                "max_side": self.max_side, "motion": self.motion.config(), "appearance": self.appearance.config()}
