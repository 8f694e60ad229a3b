"""Pseudo-videos from single annotated frames: STM's static-image pretraining stage.

Each item of :class:`PseudoVideoDataset` takes ONE annotated frame of a video (seeded choice) and makes T
frames from it by independent random affine warps (rotation, scale, translation, shear) of the frame and
its id mask. The resize to ``SupervisedClipConfig.size`` is folded into each warp (one interpolation per
frame): frames bilinear, masks NEAREST with out-of-frame pixels 0 (background). Items follow the batch
contract and object selection of :mod:`selfvos.data.supervised` (``frames``, ``masks``, ``num_objects``,
``video_index``, ``frame_indices`` = T copies of the chosen frame's index), with the same seeding,
re-draws, ``set_epoch`` and optional ``augment`` (run after the warps, before the object selection).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np
import torch

from selfvos.data.supervised import ItemAugmenter, ObjectClipBase, SupervisedClipConfig
from selfvos.data.video import VideoCollection

BORDERS = {"constant": cv2.BORDER_CONSTANT, "reflect": cv2.BORDER_REFLECT_101}


@dataclass
class PseudoVideoConfig:
    """Ranges of the per-frame random affine warp (STM-like defaults).

    ``degrees``: rotation uniform in [-degrees, degrees]; ``scale``: isotropic zoom range; ``translate``:
    shift uniform in [-translate, translate] x the side; ``shear``: horizontal shear angle uniform in
    [-shear, shear] degrees. ``border``: how frames are filled outside the source, ``"constant"`` (black,
    default: the filled area is background in frame and mask alike) or ``"reflect"`` (mirrored content, which
    the mask labels 0 all the same). Masks are always filled with 0."""

    degrees: float = 15.0
    scale: Tuple[float, float] = (0.9, 1.1)
    translate: float = 0.1
    shear: float = 10.0
    border: str = "constant"

    def __post_init__(self) -> None:
        if not 0.0 <= self.degrees <= 180.0:
            raise ValueError(f"PseudoVideoConfig.degrees must be in [0, 180], got {self.degrees}")
        if len(self.scale) != 2 or not 0.0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"PseudoVideoConfig.scale must be (low, high) with 0 < low <= high, got {self.scale}")
        if not 0.0 <= self.translate <= 1.0:
            raise ValueError(f"PseudoVideoConfig.translate must be in [0, 1], got {self.translate}")
        if not 0.0 <= self.shear < 90.0:
            raise ValueError(f"PseudoVideoConfig.shear must be in [0, 90), got {self.shear}")
        if self.border not in BORDERS:
            raise ValueError(f"PseudoVideoConfig.border must be one of {tuple(BORDERS)}, got {self.border!r}")


def random_affine(rng: np.random.Generator, cfg: PseudoVideoConfig, size: Tuple[int, int]) -> np.ndarray:
    """(3, 3) float64 forward map of pixel coordinates (x, y, 1) of an (H, W) = ``size`` image: rotation,
    shear and scale about the image centre, then a translation."""
    h, w = size
    angle = np.deg2rad(rng.uniform(-cfg.degrees, cfg.degrees))
    zoom = rng.uniform(*cfg.scale)
    shear = np.deg2rad(rng.uniform(-cfg.shear, cfg.shear))
    shift = rng.uniform(-cfg.translate, cfg.translate, size=2) * np.array([w, h])
    rotate = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    linear = zoom * rotate @ np.array([[1.0, np.tan(shear)], [0.0, 1.0]])
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    out = np.eye(3)
    out[:2, :2], out[:2, 2] = linear, centre + shift - linear @ centre
    return out


def resize_matrix(src: Tuple[int, int], dst: Tuple[int, int]) -> np.ndarray:
    """(3, 3) map of pixel coordinates of an (H0, W0) image onto the (H, W) image ``cv2.resize`` makes of it
    (pixel centres aligned)."""
    (h0, w0), (h, w) = src, dst
    sx, sy = w / w0, h / h0
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def warp_pair(frame: np.ndarray, mask: np.ndarray, matrix: np.ndarray, size: Tuple[int, int],
              border: str = "constant") -> Tuple[torch.Tensor, torch.Tensor]:
    """frame (H0, W0, 3) uint8 and mask (H0, W0) uint8 ids, warped by ``matrix`` (3, 3) onto (H, W) = ``size``
    -> frame float32 (3, H, W) in [0, 1] (bilinear) and mask int64 (H, W) (nearest, outside = 0)."""
    h, w = size
    src = frame.astype(np.float32) / 255.0
    out = cv2.warpAffine(src, matrix[:2], (w, h), flags=cv2.INTER_LINEAR, borderMode=BORDERS[border], borderValue=0)
    ids = cv2.warpAffine(np.ascontiguousarray(mask), matrix[:2], (w, h), flags=cv2.INTER_NEAREST,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    frame_t = torch.from_numpy(np.clip(out, 0.0, 1.0)).permute(2, 0, 1).contiguous()
    return frame_t, torch.from_numpy(ids.astype(np.int64))


class PseudoVideoDataset(ObjectClipBase):
    """T independently warped copies of one annotated frame per item (see the module docstring).

    ``affine``: the warp ranges (None = ``PseudoVideoConfig()``). ``cfg.max_skip`` / ``max_skip`` are
    unused (kept so a curriculum callback can drive either dataset)."""

    def __init__(self, collection: VideoCollection, cfg: SupervisedClipConfig, augment: Optional[ItemAugmenter] = None,
                 clips_per_video: int = 1, affine: Optional[PseudoVideoConfig] = None) -> None:
        super().__init__(collection, cfg, augment, clips_per_video)
        self.affine = affine if affine is not None else PseudoVideoConfig()

    def _draw(self, video_index: int, rng: np.random.Generator,
              max_skip: int) -> Tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        video, annotated = self.videos[video_index], self.annotated[video_index]
        index = int(annotated[rng.integers(len(annotated))])
        frame, mask = video.frame(index), self._ids(video, index)
        to_size = resize_matrix(frame.shape[:2], self.cfg.size)
        warped = [warp_pair(frame, mask, random_affine(rng, self.affine, self.cfg.size) @ to_size, self.cfg.size,
                            self.affine.border) for _ in range(self.cfg.num_frames)]
        frames = torch.stack([f for f, _ in warped])
        masks = torch.stack([m for _, m in warped])
        return frames, masks, np.full(self.cfg.num_frames, index, dtype=np.int64)
