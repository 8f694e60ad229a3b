"""Video instance segmentation (VIS), the generic part: per-frame instances, instance sources and the VIS core factory.

Instance source (:class:`InstanceSource`): any callable ``source(frame, frame_index) -> FrameInstances`` with
``frame`` (H, W, 3) uint8 RGB; :class:`FrameInstances` holds ``masks`` (N, H, W) bool, ``boxes`` (N, 4) float xyxy
pixel edges (x1, y1 one past the last pixel), ``scores`` (N,) detection scores in [0, 1] and optionally
``class_scores`` (N, C) (then used instead of the head's class head). :class:`GivenInstances` gives masks per frame,
as (H, W) id maps (0 background, 255 void, any other value one instance), score 1, optionally in a random order
per frame with jittered boxes (ground truth as a stand-in detector). A detector plugs in as a function::

    def detector_source(frame, frame_index):
        masks, scores, probs = my_detector(frame)                  # (N, H, W) bool, (N,), (N, C)
        return FrameInstances(masks, mask_boxes_np(masks), scores, probs)

    core = create_vis_core(selfvos.from_pretrained("runs/masktrack/model"), detector_source)
    tracks = core.segment_video(video); records = core.to_vis_results(video_id=1, tracks=tracks)

:func:`create_vis_core` builds the VIS core of any model whose ``tasks`` include ``"vis"`` through the ``CORES``
factory of its architecture; a VIS core has ``segment_video(video) -> tracks`` and ``to_vis_results(video_id,
tracks) -> [YouTube-VIS result record]`` (e.g. :class:`selfvos.heads.vis_core.VISCore`). Nothing here depends on a
particular head.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence, Tuple, Union

import numpy as np
import torch

from selfvos.errors import SelfvosInputError

VOID = 255


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool -> (N, 4) float xyxy pixel-edge boxes (x1, y1 one past the last pixel); empty -> zeros."""
    rows, cols = masks.any(2), masks.any(1)
    h, w = masks.shape[1:]

    def extent(hit: torch.Tensor, size: int) -> Tuple[torch.Tensor, torch.Tensor]:
        index = torch.arange(size, device=hit.device)
        first = torch.where(hit, index, size).amin(1)
        last = torch.where(hit, index, -1).amax(1) + 1
        return torch.where(hit.any(1), first, 0), last.clamp(min=0)

    x0, x1 = extent(cols, w)
    y0, y1 = extent(rows, h)
    return torch.stack([x0, y0, x1, y1], dim=1).float()


def mask_boxes_np(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (N, 4) float32 xyxy pixel-edge boxes (zeros for an empty mask)."""
    masks = np.asarray(masks, dtype=bool)
    if not len(masks):
        return np.zeros((0, 4), np.float32)
    return mask_boxes(torch.from_numpy(masks)).numpy()


def jitter_boxes(boxes: torch.Tensor, fraction: float, size: Tuple[int, int],
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Move each corner by up to ``fraction`` of the box width / height (uniform), clipped to the (H, W) image,
    keeping at least one pixel: ``b' = clip(b + fraction * (w, h, w, h) * U(-1, 1))``."""
    if fraction <= 0 or not len(boxes):
        return boxes
    wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    noise = (torch.rand(boxes.shape, generator=generator) * 2 - 1).to(boxes.device)
    out = boxes + fraction * wh * noise
    limit = boxes.new_tensor([size[1], size[0]]).repeat(2)
    out = torch.minimum(out.clamp(min=0), limit)
    out[:, 2:] = torch.maximum(out[:, 2:], out[:, :2] + 1)
    return out


@dataclass
class FrameInstances:
    """The instances of one frame (module docstring); shapes are checked (``ValueError``)."""

    masks: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    class_scores: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        self.masks = np.asarray(self.masks, dtype=bool)
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        n = len(self.masks)
        if self.masks.ndim != 3 or len(self.boxes) != n or len(self.scores) != n:
            raise ValueError(f"instances need masks (N, H, W), boxes (N, 4), scores (N,); got {self.masks.shape}, "
                             f"{self.boxes.shape}, {self.scores.shape}")
        if self.class_scores is not None:
            self.class_scores = np.asarray(self.class_scores, dtype=np.float32)
            if self.class_scores.ndim != 2 or len(self.class_scores) != n:
                raise ValueError(f"class_scores must be (N, C) with N = {n}, got {self.class_scores.shape}")

    def __len__(self) -> int:
        return len(self.masks)

    @staticmethod
    def ids_of(ids: np.ndarray) -> np.ndarray:
        """The instance ids of an (H, W) id map: every value other than 0 and 255, increasing."""
        values = np.unique(np.asarray(ids))
        return values[(values != 0) & (values != VOID)]

    @classmethod
    def from_ids(cls, ids: np.ndarray, scores: Optional[np.ndarray] = None) -> "FrameInstances":
        """(H, W) id map -> one instance per id of :meth:`ids_of`, in increasing id order; ``scores`` (one per
        such id, in that order; default 1)."""
        ids = np.asarray(ids)
        values = cls.ids_of(ids)
        masks = np.stack([ids == v for v in values]) if len(values) else np.zeros((0, *ids.shape), bool)
        return cls(masks, mask_boxes_np(masks), np.ones(len(values), np.float32) if scores is None else scores)


class InstanceSource(Protocol):
    """``source(frame (H, W, 3) uint8, frame_index) -> FrameInstances`` of that frame."""

    def __call__(self, frame: np.ndarray, frame_index: int) -> FrameInstances: ...


class GivenInstances:
    """Instances from per-frame (H, W) id maps: ``maps`` a sequence of arrays or ``maps(frame_index) -> array``.
    ``shuffle``: the instances' order is a random permutation per frame; ``box_jitter``: boxes moved by
    :func:`jitter_boxes`; both seeded by ``(seed, frame_index)`` (``seed`` >= 0)."""

    def __init__(self, maps: Union[Sequence[np.ndarray], Callable[[int], np.ndarray]], shuffle: bool = False,
                 box_jitter: float = 0.0, seed: int = 0, name: str = "instances") -> None:
        self.maps, self.shuffle, self.box_jitter, self.seed, self.name = maps, shuffle, box_jitter, seed, name

    @classmethod
    def from_folder(cls, folder: Union[str, Path], frame_names: Sequence[str], **options: Any) -> "GivenInstances":
        """Indexed PNGs ``folder/<frame name>.png`` (palette or grey; pixel value = instance), one per frame;
        a missing folder or PNG is a ``SelfvosInputError`` naming it (checked now, read lazily)."""
        from selfvos.data.image_io import read_mask

        folder = Path(folder)
        if not folder.is_dir():
            raise SelfvosInputError(folder, "instance folder does not exist" if not folder.exists()
                                    else "is not a folder of per-frame instance PNGs")
        paths = [folder / f"{name}.png" for name in frame_names]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise SelfvosInputError(missing[0], f"no instance PNG for frame {missing[0].stem} ({len(missing)} of "
                                                f"{len(paths)} frames missing); name them <frame name>.png")
        return cls(lambda index: read_mask(paths[index]), name=str(folder), **options)

    def __call__(self, frame: np.ndarray, frame_index: int) -> FrameInstances:
        ids = self.maps(frame_index) if callable(self.maps) else self.maps[frame_index]
        ids = np.asarray(ids)
        if ids.shape != tuple(frame.shape[:2]):
            raise SelfvosInputError(self.name, f"frame {frame_index}: instance map is {ids.shape[1]}x{ids.shape[0]} "
                                               f"(WxH) but the frame is {frame.shape[1]}x{frame.shape[0]}")
        found = FrameInstances.from_ids(ids)
        rng = np.random.default_rng([self.seed, frame_index])
        order = rng.permutation(len(found)) if self.shuffle else np.arange(len(found))
        boxes = torch.from_numpy(found.boxes[order])
        if self.box_jitter > 0:
            generator = torch.Generator().manual_seed(int(rng.integers(2 ** 31)))
            boxes = jitter_boxes(boxes, self.box_jitter, ids.shape, generator)
        return FrameInstances(found.masks[order], boxes.numpy(), found.scores[order])


def create_vis_core(model: Any, source: InstanceSource, head: Optional[Mapping[str, Any]] = None,
                    max_side: Optional[int] = None) -> Any:
    """The VIS core of a model whose ``tasks`` include ``"vis"``, through the ``CORES`` factory of its
    architecture (``head``: inference-setting overrides; ``max_side``: longest side frames are processed at)."""
    from selfvos.inference.core import architecture_of, supported_tasks
    from selfvos.registry import CORES

    name = architecture_of(model)
    if "vis" not in supported_tasks(model):
        raise SelfvosInputError(name, f"the {name} model runs {' / '.join(supported_tasks(model))} only; video "
                                      "instance segmentation needs a VIS head (e.g. masktrack)")
    return CORES.get(name)(model, "vis", {"instances": source, "head": dict(head or {}), "max_side": max_side})


__all__ = ["FrameInstances", "GivenInstances", "InstanceSource", "create_vis_core", "jitter_boxes", "mask_boxes",
           "mask_boxes_np"]
