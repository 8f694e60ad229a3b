"""Multi-object id clips for supervised VOS heads (STM, FEELVOS, CFBI, RVOS ...): the batch contract,
object selection and renumbering, and the clip dataset over annotated frames.

One item of :class:`SupervisedClipDataset` / :class:`selfvos.data.pseudo_video.PseudoVideoDataset`
(:func:`collate_objects` adds the leading ``B``):

- ``"frames"`` float32 (T, 3, H, W) in [0, 1]: T frames of one clip in temporal order;
- ``"masks"`` int64 (T, H, W): 0 = background, 1..K = the clip's objects, 255 = void (ignored by losses);
- ``"num_objects"`` int64 () = K >= 1;
- ``"video_index"`` int64 (), ``"frame_indices"`` int64 (T,) (indices into the video's frames);
- only with ``flow``: ``"flows"`` float32 (T, 2, H, W), the zero-shot heads' motion input: DIS flow (dx, dy) in
  pixels of the clip from frame t to t + 1, and for the last frame from T - 1 to T - 2 (a 1-frame clip: zeros),
  computed on the frames after augmentation (:func:`neighbour_clip_flows`).

Binary clips (``binary``, the zero-shot heads' target): every non-zero, non-void id of every frame becomes 1
(the primary foreground, as DAVIS-2016 annotates it), void stays 255, ``num_objects`` is 1 (``object_valid``
(B, 1)); an item is re-drawn when no frame holds at least ``min_pixels`` foreground pixels
(:func:`binary_foreground`).

Objects are those present in the clip's FIRST frame after resizing and augmentation with at least
``min_pixels`` pixels; when there are more than ``max_objects`` a seeded random subset is kept. Kept objects
are renumbered 1..K in increasing order of their original id, every other id becomes 0 and void stays 255
(:func:`select_objects`). An item whose first frame holds no object is re-drawn (new clip, new augmentation)
up to ``MAX_DRAWS`` times, then a :class:`SelfvosInputError` names the video.

``collate_objects(items)`` stacks items and adds ``"object_valid"`` bool (B, K_max): True at 1..num_objects of
each item (column k is object k + 1); masks need no padding, ids above an item's K never occur.

Resizing: every frame is resized to ``size`` bilinearly, masks NEAREST (ids are labels, never interpolated).
Augmentation (e.g. :class:`selfvos.data.augment.SupervisedAugment`) maps the item (``frames`` + ``masks`` of
ORIGINAL ids) to an item and runs before the object selection, so objects pushed out of the first frame are
dropped.

Reproducibility (as :class:`selfvos.data.sampling.ClipDataset`): every random choice of item ``index`` (clip,
augmentation, object subset) comes from ``SeedSequence([seed, epoch, index])`` (augmentation: the torch RNG
forked and seeded from ``SeedSequence([seed, epoch, index, 1])``; re-draw ``a >= 1`` uses
``[seed, epoch, index, 2, a]`` and ``[seed, epoch, index, 3, a]``), independent of worker, process and order.
``epoch`` (``set_epoch``) and ``max_skip`` live in a shared-memory tensor, so persistent DataLoader workers see
updates. An item is fully determined by ``(seed, epoch, index, max_skip)``.

Skip curriculum (STM): :class:`selfvos.data.sampling.SkipCurriculum` drives these datasets like ClipDataset::

    curriculum = SkipCurriculum(start=1, end=25, steps=total_steps)
    curriculum.apply(dataset, step)  # sets dataset.max_skip (shared memory), returns it; call every step

Workers that already prefetched items keep the skip they were drawn with; log ``max_skip`` (or change it
between epochs) when a curriculum run must be bit-exact on resume.

Sparse annotation (YouTube-VOS: every 5th frame): clips are drawn from annotated frames only, so the step
between clip frames is ``1..max_skip`` ANNOTATED frames (5..5*max_skip video frames there).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from selfvos.data.sampling import ClipDataset, _resize_frame, sample_clip_indices
from selfvos.data.video import VOID, LazyVideo, VideoCollection
from selfvos.errors import SelfvosInputError

ItemAugmenter = Callable[[Dict[str, torch.Tensor]], Dict[str, torch.Tensor]]
MAX_DRAWS = 5  # draws of one item (first + re-draws) before "no object in the first frame" is an error


@dataclass
class SupervisedClipConfig:
    """Clip length T, max step between clip frames, output size (H, W), object selection and base seed."""

    num_frames: int = 3
    max_skip: int = 5  # each step between clip frames is uniform in 1..max_skip (annotated frames)
    size: Tuple[int, int] = (240, 432)  # (H, W) every frame is resized to (frames bilinear, masks nearest)
    max_objects: int = 3  # a seeded random subset is kept when the first frame holds more objects
    min_pixels: int = 16  # an object counts when it covers at least this many first-frame pixels
    seed: int = 0
    binary: bool = False  # every object of every frame -> id 1 (zero-shot heads; set by the fine-tuning recipe)
    flow: bool = False  # add item["flows"] (T, 2, H, W) (motion-stream zero-shot heads; set by the recipe)
    flow_preset: str = "medium"  # OpenCV DIS preset of those flows

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"SupervisedClipConfig.num_frames must be >= 1, got {self.num_frames}")
        if self.max_skip < 1:
            raise ValueError(f"SupervisedClipConfig.max_skip must be >= 1, got {self.max_skip}")
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"SupervisedClipConfig.size must be (H, W) with positive sides, got {self.size}")
        self.size = (int(self.size[0]), int(self.size[1]))
        if not 1 <= self.max_objects <= 254:
            raise ValueError(f"SupervisedClipConfig.max_objects must be in 1..254, got {self.max_objects}")
        if self.min_pixels < 1:
            raise ValueError(f"SupervisedClipConfig.min_pixels must be >= 1, got {self.min_pixels}")
        from selfvos.pseudo.flow import DIS_PRESETS

        if self.flow_preset not in DIS_PRESETS:
            raise ValueError(f"SupervisedClipConfig.flow_preset must be one of {sorted(DIS_PRESETS)}, "
                             f"got {self.flow_preset!r}")


def select_objects(masks: torch.Tensor, rng: np.random.Generator, max_objects: int,
                   min_pixels: int) -> Tuple[torch.Tensor, int]:
    """masks int (T, H, W) of original ids (0 background, 255 void) -> (int64 (T, H, W) with ids 0..K and 255, K).

    Objects: ids of frame 0 with >= ``min_pixels`` pixels; more than ``max_objects`` -> a random subset
    (``rng``); kept ids renumbered 1..K in increasing order, other ids -> 0, void stays 255."""
    if masks.dtype.is_floating_point or masks.dtype == torch.bool:
        raise TypeError(f"masks must hold integer object ids, got {masks.dtype} (augment must keep ids integral)")
    masks = masks.long()
    if masks.numel() and (int(masks.min()) < 0 or int(masks.max()) > VOID):
        raise ValueError(f"mask ids must be in 0..{VOID}, got {int(masks.min())}..{int(masks.max())}")
    ids, counts = torch.unique(masks[0], return_counts=True)
    keep = ((ids != 0) & (ids != VOID) & (counts >= min_pixels))
    candidates = ids[keep].cpu().numpy()
    if len(candidates) > max_objects:
        candidates = np.sort(rng.choice(candidates, size=max_objects, replace=False))
    lut = torch.zeros(VOID + 1, dtype=torch.int64, device=masks.device)
    lut[VOID] = VOID
    lut[torch.as_tensor(candidates, dtype=torch.int64, device=masks.device)] = torch.arange(
        1, len(candidates) + 1, device=masks.device)
    return lut[masks], int(len(candidates))


def binary_foreground(masks: torch.Tensor, min_pixels: int) -> Tuple[torch.Tensor, int]:
    """masks int (T, H, W) of original ids -> (int64 (T, H, W) in {0, 1, 255}, K): every non-zero, non-void id
    -> 1, void stays 255; K = 1 when some frame has at least ``min_pixels`` foreground pixels, else 0."""
    if masks.dtype.is_floating_point or masks.dtype == torch.bool:
        raise TypeError(f"masks must hold integer object ids, got {masks.dtype} (augment must keep ids integral)")
    masks = masks.long()
    if masks.numel() and (int(masks.min()) < 0 or int(masks.max()) > VOID):
        raise ValueError(f"mask ids must be in 0..{VOID}, got {int(masks.min())}..{int(masks.max())}")
    foreground = (masks != 0) & (masks != VOID)
    binary = torch.where(masks == VOID, torch.full_like(masks, VOID), foreground.long())
    present = bool(masks.numel()) and int(foreground.flatten(1).sum(1).max()) >= min_pixels
    return binary, int(present)


def neighbour_clip_flows(frames: torch.Tensor, preset: str = "medium") -> torch.Tensor:
    """frames (T, 3, H, W) in [0, 1] -> (T, 2, H, W) float32 DIS flow in pixels: frame t -> t + 1
    (:func:`~selfvos.data.sampling.clip_flow`), the last frame T - 1 -> T - 2; zeros for a 1-frame clip (the
    convention of :func:`selfvos.pseudo.flow.neighbour_flows`)."""
    from selfvos.data.sampling import clip_flow
    from selfvos.pseudo.flow import dis_flow

    if len(frames) < 2:
        return torch.zeros(len(frames), 2, *frames.shape[-2:])
    forward = clip_flow(frames, preset)
    last = (frames[-2:].clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    backward = torch.from_numpy(dis_flow(last[1], last[0], preset)).permute(2, 0, 1)
    return torch.cat([forward, backward[None]]).contiguous()


def collate_objects(items: Sequence[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Stack items (each key gets a leading B, e.g. ``flows`` -> (B, T, 2, H, W) when present) and add
    ``"object_valid"`` bool (B, K_max): True for objects 1..num_objects of each item, K_max = the largest
    ``num_objects`` in the batch."""
    items = list(items)
    if not items:
        raise ValueError("collate_objects: no items to collate")
    missing = [k for k in ("masks", "num_objects") if k not in items[0]]
    if missing:
        raise KeyError(f"collate_objects: items need {missing} (see selfvos.data.supervised)")
    for key in items[0]:
        shapes = {tuple(item[key].shape) for item in items if isinstance(item.get(key), torch.Tensor)}
        if len(shapes) > 1:
            raise ValueError(f"collate_objects: items disagree on the shape of {key!r}: {sorted(shapes)}")
    batch = default_collate(items)
    num = batch["num_objects"]
    k_max = int(num.max())
    batch["object_valid"] = torch.arange(1, k_max + 1) <= num[:, None]
    return batch


def resize_ids(mask: np.ndarray, size: Tuple[int, int], void_value: int = VOID) -> torch.Tensor:
    """(H0, W0) uint8 ids -> int64 (H, W), nearest with pixel centres aligned like the bilinear frame resize
    (``INTER_NEAREST_EXACT``; plain ``INTER_NEAREST`` shifts by up to half a source pixel); the video's void
    value becomes 255."""
    h, w = size
    if mask.shape[:2] != (h, w):
        mask = cv2.resize(np.ascontiguousarray(mask), (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
    ids = torch.from_numpy(mask.astype(np.int64))
    if void_value != VOID:
        ids = torch.where(ids == void_value, torch.tensor(VOID), ids)
    return ids


class ObjectClipBase(Dataset, ABC):
    """Shared machinery of the supervised datasets: annotated frames per video, seeding, the draw loop and
    object selection. Subclasses implement ``_draw(video_index, rng, max_skip) -> (frames (T, 3, H, W) float,
    masks (T, H, W) int64 original ids, frame_indices (T,) int64)``."""

    def __init__(self, collection: VideoCollection, cfg: SupervisedClipConfig, augment: Optional[ItemAugmenter] = None,
                 clips_per_video: int = 1) -> None:
        if len(collection) == 0:
            raise ValueError(f"{collection.source or 'collection'}: no videos to sample clips from")
        if clips_per_video < 1:
            raise ValueError(f"clips_per_video must be >= 1, got {clips_per_video}")
        self.collection, self.cfg, self.augment, self.clips_per_video = collection, cfg, augment, clips_per_video
        self.videos: List[LazyVideo] = list(collection)
        self.annotated: List[np.ndarray] = []  # per video: sorted indices of its annotated frames
        for video in self.videos:
            annotated = np.asarray(sorted(video.annotated_indices()), dtype=np.int64)
            if not len(annotated):
                raise SelfvosInputError(video.source or video.name, f"video {video.name!r} has no annotated frame: "
                                        "supervised clips need id masks")
            self.annotated.append(annotated)
        self._state = torch.tensor([0, cfg.max_skip], dtype=torch.int64).share_memory_()  # (epoch, max_skip)

    def __len__(self) -> int:
        return len(self.videos) * self.clips_per_video

    # one implementation with ClipDataset: epoch / set_epoch / max_skip (validated setter) / item_seed
    epoch = ClipDataset.epoch
    set_epoch = ClipDataset.set_epoch
    max_skip = ClipDataset.max_skip
    item_seed = ClipDataset.item_seed

    def _seeds(self, epoch: int, index: int, attempt: int) -> Tuple[np.random.SeedSequence, np.random.SeedSequence]:
        """(sampling seed, augmentation seed) of draw ``attempt`` of item ``index``."""
        base = [self.cfg.seed, epoch, int(index)]
        if attempt == 0:
            return np.random.SeedSequence(base), np.random.SeedSequence(base + [1])
        return np.random.SeedSequence(base + [2, attempt]), np.random.SeedSequence(base + [3, attempt])

    @staticmethod
    def _ids(video: LazyVideo, index: int) -> np.ndarray:
        """uint8 (H0, W0) original ids of annotated frame ``index`` as stored, the video's void value as 255."""
        ids = video.mask(index)
        if ids is None:
            raise SelfvosInputError(video.source or video.name,
                                    f"video {video.name!r}: frame {index} is listed as annotated but has no mask")
        ids = np.asarray(ids, dtype=np.uint8)
        return ids if video.void_value == VOID else np.where(ids == video.void_value, VOID, ids).astype(np.uint8)

    def _mask(self, video: LazyVideo, index: int) -> torch.Tensor:
        """int64 (H, W) original ids of annotated frame ``index`` at ``cfg.size`` (nearest)."""
        return resize_ids(self._ids(video, index), self.cfg.size)

    @abstractmethod
    def _draw(self, video_index: int, rng: np.random.Generator,
              max_skip: int) -> Tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """One clip of video ``video_index``: frames (T, 3, H, W), ORIGINAL ids (T, H, W), frame indices (T,)."""

    def __getitem__(self, index: int) -> Dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"clip {index} out of range for {len(self)} clips")
        epoch, max_skip = self.epoch, self.max_skip  # read once: a concurrent update cannot split an item
        video_index = index % len(self.videos)
        for attempt in range(MAX_DRAWS):
            sample_seed, augment_seed = self._seeds(epoch, index, attempt)
            rng = np.random.default_rng(sample_seed)
            frames, masks, frame_indices = self._draw(video_index, rng, max_skip)
            item = {"frames": frames, "masks": masks, "video_index": torch.tensor(video_index, dtype=torch.int64),
                    "frame_indices": torch.as_tensor(frame_indices, dtype=torch.int64)}
            if self.augment is not None:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(int(augment_seed.generate_state(1)[0]))
                    item = self.augment(item)
            if self.cfg.binary:
                item["masks"], k = binary_foreground(item["masks"], self.cfg.min_pixels)
            else:
                item["masks"], k = select_objects(item["masks"], rng, self.cfg.max_objects, self.cfg.min_pixels)
            if k:
                item["num_objects"] = torch.tensor(k, dtype=torch.int64)
                if self.cfg.flow:
                    item["flows"] = neighbour_clip_flows(item["frames"], self.cfg.flow_preset)
                return item
        video = self.videos[video_index]
        where = "any frame" if self.cfg.binary else "the first frame"
        raise SelfvosInputError(video.source or video.name, f"video {video.name!r}: no object with at least "
                                f"{self.cfg.min_pixels} pixels in {where} of item {index} in {MAX_DRAWS} draws")


class SupervisedClipDataset(ObjectClipBase):
    """Random id clips of annotated frames from a :class:`VideoCollection` (see the module docstring).

    Item ``index`` reads video ``index % len(collection)``; T clip frames are drawn among the video's
    annotated frames with steps uniform in 1..``max_skip`` (``sample_clip_indices``; a video with fewer
    than T annotated frames repeats its last one). A video without any annotated frame is an error."""

    def _draw(self, video_index: int, rng: np.random.Generator,
              max_skip: int) -> Tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        video, annotated = self.videos[video_index], self.annotated[video_index]
        positions = sample_clip_indices(rng, len(annotated), self.cfg.num_frames, max_skip)
        indices = annotated[positions]
        frames = torch.stack([_resize_frame(video.frame(int(i)), self.cfg.size) for i in indices])
        masks = torch.stack([self._mask(video, int(i)) for i in indices])
        return frames, masks, indices


def __getattr__(name: str):  # PseudoVideoDataset lives in pseudo_video.py (which imports this module)
    if name in ("PseudoVideoDataset", "PseudoVideoConfig"):
        from selfvos.data import pseudo_video

        return getattr(pseudo_video, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
