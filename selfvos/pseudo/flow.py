"""Classical dense optical flow (OpenCV DIS) with an optional on-disk cache, shared by the motion
pseudo-labeler and the motion-stream heads.

Flow convention: ``flow[y, x] = (dx, dy)`` such that pixel (x, y) of the *reference* frame moves to
``(x + dx, y + dy)`` in the *target* frame; shape (H, W, 2) float32, in pixels of the working
resolution.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np

from selfvos.atomic import atomic_write_bytes
from selfvos.data.video import LazyVideo
from selfvos.pseudo.base import downscale

DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
# OpenCV's DIS raises (and after that may crash the process) on images under about 12x12 pixels or whose short
# side is far below the long one; such images are padded (edge pixels repeated) to this size before the flow.
DIS_MIN_SIDE = 16
DIS_MAX_ASPECT = 4


def pad_for_dis(grey: np.ndarray) -> np.ndarray:
    """``grey`` (H, W) grown at the bottom / right by repeating its edge so that both sides are at least
    ``DIS_MIN_SIDE`` and at least 1 / ``DIS_MAX_ASPECT`` of the other side; unchanged when already so."""
    height, width = grey.shape[:2]
    new_h = max(height, DIS_MIN_SIDE, -(-width // DIS_MAX_ASPECT))
    new_w = max(width, DIS_MIN_SIDE, -(-height // DIS_MAX_ASPECT))
    if (new_h, new_w) == (height, width):
        return grey
    return cv2.copyMakeBorder(grey, 0, new_h - height, 0, new_w - width, cv2.BORDER_REPLICATE)


def dis_flow(reference: np.ndarray, target: np.ndarray, preset: str = "medium") -> np.ndarray:
    """DIS optical flow from ``reference`` to ``target``, both (H, W, 3) uint8 RGB or (H, W) grey.

    Returns (H, W, 2) float32 ``(dx, dy)``. Tiny or very elongated frames are padded for DIS (see
    :func:`pad_for_dis`) and the flow cropped back to (H, W).
    """
    if preset not in DIS_PRESETS:
        raise ValueError(f"unknown DIS preset {preset!r}; choose one of {sorted(DIS_PRESETS)}")
    grey = [cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) if im.ndim == 3 else im for im in (reference, target)]
    height, width = grey[0].shape[:2]
    dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])
    flow = dis.calc(pad_for_dis(grey[0]), pad_for_dis(grey[1]), None)
    return np.ascontiguousarray(flow[:height, :width]).astype(np.float32)


class FlowField:
    """Flow between frames of one video at a fixed working resolution, optionally cached on disk.

    ``FlowField(max_side=480, preset="medium", cache_dir="flow_cache")(video, i, j)`` returns the
    (h, w, 2) flow from frame ``i`` to frame ``j`` of ``video`` where (h, w) is the frame downscaled so
    its longest side is at most ``max_side``. Cached flows are stored as float16 ``.npy`` files under
    ``cache_dir/<video>/<preset>_<max_side>/<i>_<j>.npy`` (written atomically).
    """

    def __init__(self, *, preset: str = "medium", max_side: int = 0, cache_dir: Optional[Union[str, Path]] = None) -> None:
        if preset not in DIS_PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; choose one of {sorted(DIS_PRESETS)}")
        self.preset, self.max_side = preset, int(max_side)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None

    def cache_path(self, video_name: str, i: int, j: int) -> Optional[Path]:
        if self.cache_dir is None:
            return None
        return self.cache_dir / video_name / f"{self.preset}_{self.max_side}" / f"{i:06d}_{j:06d}.npy"

    def working_frame(self, video: LazyVideo, index: int) -> np.ndarray:
        """Frame ``index`` at the working resolution, (h, w, 3) uint8."""
        return downscale(video.frame(index), self.max_side)

    def __call__(self, video: LazyVideo, i: int, j: int) -> np.ndarray:
        path = self.cache_path(video.name, i, j)
        if path is not None and path.is_file():
            return np.load(path).astype(np.float32)
        flow = dis_flow(self.working_frame(video, i), self.working_frame(video, j), self.preset)
        if path is not None:
            half = flow.astype(np.float16)
            atomic_write_bytes(path, lambda fh: np.save(fh, half))
        return flow
