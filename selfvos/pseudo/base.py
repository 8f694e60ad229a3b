"""The pseudo-labeler interface: ``labeler(video, frame_index) -> (H, W) float32 soft mask in [0, 1]``.

A labeler sees the whole :class:`~selfvos.data.video.LazyVideo` (motion needs the neighbouring frames)
and returns a map at the frame's own resolution. ``max_side`` > 0 makes it work on a downscaled copy
(longest side ``max_side``) and upsample the result, which bounds the cost on high-resolution video.
``config()`` is the JSON-serialisable description written into a store round's manifest.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Dict, Tuple

import cv2
import numpy as np

from selfvos.data.video import LazyVideo


def downscale(image: np.ndarray, max_side: int) -> np.ndarray:
    """Resize (H, W, ...) so that its longest side is at most ``max_side`` (area interpolation); 0 = keep."""
    h, w = image.shape[:2]
    if max_side <= 0 or max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def upsample_map(saliency: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an (h, w) float map to ``size`` = (H, W), clipped to [0, 1]."""
    if saliency.shape[:2] != tuple(size):
        saliency = cv2.resize(saliency.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return np.clip(saliency, 0.0, 1.0).astype(np.float32)


class PseudoLabeler(ABC):
    """Produces one soft foreground map per frame of a video."""

    name: str = "labeler"
    max_side: int = 0

    @abstractmethod
    def __call__(self, video: LazyVideo, index: int) -> np.ndarray:
        """Soft foreground (H, W) float32 in [0, 1] for frame ``index`` of ``video``."""

    @abstractmethod
    def config(self) -> Dict[str, object]:
        """JSON-serialisable settings, including a ``type`` key naming the labeler."""


class FramePseudoLabeler(PseudoLabeler):
    """A labeler that looks at one frame only; subclasses implement :meth:`saliency`."""

    @abstractmethod
    def saliency(self, frame: np.ndarray) -> np.ndarray:
        """(h, w, 3) uint8 RGB -> (h, w) float32 in [0, 1]."""

    def __call__(self, video: LazyVideo, index: int) -> np.ndarray:
        frame = video.frame(index)
        return upsample_map(self.saliency(downscale(frame, self.max_side)), frame.shape[:2])
