"""Bootstrapped relabeling: the trained model becomes the next round's pseudo-labeler.

After training round ``r`` on the pseudo-masks of store round ``r``, :class:`ModelRelabeler` labels every
training video into store round ``r + 1`` (through :func:`selfvos.pseudo.generate_pseudo_labels`, so it is
resumable and atomic like round 0). Per frame:

1. ``p = sigmoid(rho(phi(x)))`` on the frame resized to the training size, averaged with the prediction on
   the horizontally flipped frame (``flip_tta``), upsampled bilinearly to the frame size;
2. temporal smoothing: the mean of ``p`` over the frames ``t - k .. t + k`` (``temporal_radius`` k, clamped
   at the video ends), which suppresses single-frame flicker;
3. fusion with motion: ``p = (1 - m) p + m M`` with ``M`` the camera-compensated motion saliency of round 0
   (:class:`selfvos.pseudo.MotionSaliency`) and ``m = motion_weight``: the trained frame head replaces the
   manifold-ranking appearance cue of the round-0 fusion (on DAVIS-2016 train, every 10th frame: fused round 0
   0.598 J; final model alone 0.49; model + motion at m = 0.7 / 0.6 / 0.5: 0.615 / 0.626 / 0.628);
   then optional momentum ``p = (1 - w) p + w q`` with the previous round's pseudo-mask ``q``
   (``previous_weight``, default off);
4. clean-up: the binary mask ``p >= threshold`` keeps its largest 8-connected component and those at
   least ``min_component_fraction`` of its area (dropping isolated false positives);
5. refinement (``grabcut_iterations`` > 0): a GrabCut colour model on the full-resolution frame snaps
   the coarse (output stride 8) mask to image edges, with ``p >= 0.8`` as sure foreground and pixels
   far from the mask as sure background (:func:`selfvos.pseudo.fusion.grabcut_refine`, as round 0 does).
   The soft map stays consistent with the final binary mask (inside >= 0.5, outside < 0.5).

The stored mask is soft; ``threshold`` (default 0.5) is the binarisation used for quality (J) and clean-up.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from selfvos.data.video import LazyVideo
from selfvos.pseudo.base import PseudoLabeler
from selfvos.pseudo.fusion import fill_holes, grabcut_refine, keep_largest_components, soft_from_binary

MaskProvider = Callable[[str, int], Optional[np.ndarray]]


@dataclass
class BootstrapConfig:
    """Rounds of train -> relabel. ``rounds`` training rounds; after each one the model relabels the videos."""

    rounds: int = 2
    threshold: float = 0.5
    flip_tta: bool = True
    temporal_radius: int = 0
    motion_weight: float = 0.5  # 0 = the model alone
    previous_weight: float = 0.0
    min_component_fraction: float = 0.2
    grabcut_iterations: int = 3  # 0 = no colour refinement
    batch_size: int = 8  # frames per forward pass while relabeling
    relabel_after_last: bool = True  # False: no relabel pass after the final round (nothing trains on it)

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"bootstrap.rounds must be >= 1, got {self.rounds}")
        if not 0.0 <= self.motion_weight < 1.0:
            raise ValueError(f"bootstrap.motion_weight must be in [0, 1), got {self.motion_weight}")
        if not 0.0 <= self.previous_weight < 1.0:
            raise ValueError(f"bootstrap.previous_weight must be in [0, 1), got {self.previous_weight}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"bootstrap.threshold must be in (0, 1), got {self.threshold}")


@torch.no_grad()
def predict_foreground(model: torch.nn.Module, frames: np.ndarray, size: Tuple[int, int], *,
                       flip_tta: bool = True) -> np.ndarray:
    """Frame-head foreground probability: frames (N, H, W, 3) uint8 -> (N, H, W) float32 in [0, 1].

    ``model`` is a :class:`selfvos.pretrain.MuGModel` (``encode`` + ``frame_logits``); frames are resized to
    ``size`` (H, W) for the network and the probabilities resized back.
    """
    device = next(model.parameters()).device
    x = torch.from_numpy(frames).to(device).permute(0, 3, 1, 2).float().div_(255)
    h, w = frames.shape[1:3]
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    logits = model.frame_logits(model.encode(x))  # (N, 1, h', w')
    prob = torch.sigmoid(logits.float())
    if flip_tta:
        flipped = torch.sigmoid(model.frame_logits(model.encode(x.flip(-1))).float()).flip(-1)
        prob = 0.5 * (prob + flipped)
    prob = F.interpolate(prob, size=(h, w), mode="bilinear", align_corners=False)
    return prob[:, 0].clamp_(0, 1).cpu().numpy().astype(np.float32)


class ModelRelabeler(PseudoLabeler):
    """The trained model as a :class:`PseudoLabeler` (one bootstrapping relabel pass).

    Predictions of a video are computed in batches and cached, so smoothing over neighbours costs no
    extra forward passes. ``previous`` is the mask provider of the round being replaced.
    """

    name = "model"

    def __init__(self, model: torch.nn.Module, size: Tuple[int, int], cfg: BootstrapConfig,
                 previous: Optional[MaskProvider] = None, round_index: int = 0) -> None:
        self.model, self.size, self.cfg, self.previous = model, tuple(size), cfg, previous
        self.round_index = round_index
        self.motion = None
        if cfg.motion_weight > 0:
            from selfvos.pseudo.motion import MotionSaliency

            self.motion = MotionSaliency()
        self._video: Optional[str] = None
        self._cache: Dict[int, np.ndarray] = {}

    def config(self) -> Dict[str, object]:
        c = self.cfg
        return {"type": "model", "trained_round": self.round_index, "size": list(self.size),
                "flip_tta": c.flip_tta, "temporal_radius": c.temporal_radius, "motion_weight": c.motion_weight,
                "previous_weight": c.previous_weight,
                "threshold": c.threshold, "min_component_fraction": c.min_component_fraction,
                "grabcut_iterations": c.grabcut_iterations}

    def _probabilities(self, video: LazyVideo, indices: List[int]) -> List[np.ndarray]:
        if video.name != self._video:
            self._video, self._cache = video.name, {}
        todo = [i for i in indices if i not in self._cache]
        for start in range(0, len(todo), self.cfg.batch_size):
            chunk = todo[start:start + self.cfg.batch_size]
            probs = predict_foreground(self.model, np.stack([video.frame(i) for i in chunk]), self.size,
                                       flip_tta=self.cfg.flip_tta)
            self._cache.update(zip(chunk, probs))
        return [self._cache[i] for i in indices]

    def __call__(self, video: LazyVideo, index: int) -> np.ndarray:
        cfg = self.cfg
        r = cfg.temporal_radius
        window = list(range(max(0, index - r), min(len(video), index + r + 1)))
        # predict ahead in batches: the window plus the next batch of frames
        ahead = list(range(index, min(len(video), index + cfg.batch_size)))
        self._probabilities(video, sorted(set(window) | set(ahead)))
        p = np.mean(self._probabilities(video, window), axis=0)
        for old in [k for k in self._cache if k < index - r]:
            del self._cache[old]
        if self.motion is not None:
            p = (1.0 - cfg.motion_weight) * p + cfg.motion_weight * self.motion(video, index).astype(np.float32)
        if self.previous is not None and cfg.previous_weight > 0:
            q = self.previous(video.name, index)
            if q is not None:
                p = (1.0 - cfg.previous_weight) * p + cfg.previous_weight * q.astype(np.float32)
        binary = fill_holes(keep_largest_components(p >= cfg.threshold, cfg.min_component_fraction))
        if cfg.grabcut_iterations > 0:
            binary = grabcut_refine(video.frame(index), binary, p, iterations=cfg.grabcut_iterations)
            binary = fill_holes(keep_largest_components(binary, cfg.min_component_fraction))
        # soft_from_binary uses 0.5 as the boundary; shift so `threshold` maps onto it
        shifted = np.clip(p - cfg.threshold + 0.5, 0.0, 1.0)
        return soft_from_binary(shifted, binary)
