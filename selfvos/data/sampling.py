"""Clip sampling for pretraining: the batch contract, frame-skip clips, reference frames, skip curriculum.

One item of :class:`ClipDataset` (the default collate adds the leading ``B``):

- ``"frames"`` float32 (T, 3, H, W) in [0, 1]: T frames of one clip in temporal order;
- ``"pseudo_masks"`` float32 (T, 1, H, W) in [0, 1]; ``"mask_valid"`` bool (T,);
- ``"refs"`` float32 (R, 3, H, W) frames from anywhere in the same video outside the clip;
  ``"ref_masks"`` float32 (R, 1, H, W); ``"ref_valid"`` bool (R,);
- ``"video_index"`` int64 (), ``"frame_indices"`` int64 (T,), ``"ref_indices"`` int64 (R,);
- only with ``crop_views="tracking"``: ``"track_frames"`` float32 (T, 3, H, W), a close-up window of the same
  T frames, read by the tracking objective alone;
- only with ``flow``: ``"flow"`` float32 (T-1, 2, H, W), DIS optical flow from each clip frame to the next, in
  pixels of ``frames`` (computed on the final, augmented frames, so it matches what the network sees), read by the
  motion objectives (``selfvos.pretrain.flow_explanation``).

Reproducibility: every random choice of item ``index`` (clip, references, augmentation) is drawn from
``SeedSequence([seed, epoch, index])`` and does not depend on the worker, the process or the order in which
items are asked for; so DDP ranks (which see disjoint indices of one seeded shuffle) and a resumed run (same
epoch, same indices) get identical clips. ``epoch`` (``set_epoch``, called by the trainer's loader) and
``max_skip`` live in a shared-memory tensor, so persistent DataLoader workers see updates too. An item is
fully determined by ``(seed, epoch, index, max_skip)``: change ``max_skip`` between epochs (or log it) to
keep a curriculum run bit-exact when workers prefetch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from selfvos.data.video import LazyVideo, VideoCollection

MaskProvider = Callable[[str, int], Optional[np.ndarray]]  # (video_name, frame_index) -> (H, W) float in [0, 1]
ClipAugmenter = Callable[[Dict[str, torch.Tensor]], Dict[str, torch.Tensor]]
Window = Tuple[Tuple[int, int], Tuple[slice, slice]]  # ((H, W) to resize frames to, (rows, columns) to keep)
CROP_VIEWS = ("all", "tracking")


@dataclass
class ClipSamplerConfig:
    """Clip length T, max frame skip, number of reference frames R, output size (H, W) and base seed.

    ``crop_from``: None (default) resizes whole frames to ``size``. An (H, W) at least ``size`` resizes
    frames to ``crop_from`` first and cuts one random ``size`` window per item, the same window for the clip
    frames, the references and their masks: objects are then seen ``crop_from / size`` times larger at the
    same cost per step (closer to the scale of 480p inference), with less of the frame around them.
    ``crop_p``: the probability that an item is such a window; the other items are whole frames resized to
    ``size`` (multi-scale training: both the close-up and the whole-frame view).
    ``crop_views``: which objectives see the window. ``"all"`` (default): the item itself is the window, as
    above. ``"tracking"``: the item stays whole frames at ``size`` (frame head, matching and memory keep the
    whole-frame view) and carries ``track_frames``, a ``crop_from`` window of the same clip frames, for the
    forward-backward tracking objective (the split view: close-ups for correspondence only); ``crop_p`` is
    then unused.
    Windows are off by default; what they do to zero-shot and one-shot accuracy is measured in docs/results.md
    ("Pretraining recipes").
    """

    num_frames: int = 3
    max_skip: int = 3  # each step between clip frames is uniform in 1..max_skip (1 = consecutive frames)
    num_refs: int = 2
    size: Tuple[int, int] = (128, 128)
    seed: int = 0
    crop_from: Optional[Tuple[int, int]] = None
    crop_p: float = 1.0
    crop_views: str = "all"  # "all" | "tracking"
    flow: bool = False  # add item["flow"]: DIS flow between consecutive clip frames (set by the recipe when needed)

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.max_skip < 1 or self.num_refs < 0:
            raise ValueError(f"need num_frames >= 1, max_skip >= 1, num_refs >= 0; got {self}")
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"size must be (H, W) with positive sides, got {self.size}")
        if self.crop_from is not None and (len(self.crop_from) != 2 or any(
                c < s for c, s in zip(self.crop_from, self.size))):
            raise ValueError(f"crop_from must be (H, W) at least size {tuple(self.size)}, got {self.crop_from}")
        if not 0.0 <= self.crop_p <= 1.0:
            raise ValueError(f"crop_p must be in [0, 1], got {self.crop_p}")
        if self.crop_views not in CROP_VIEWS:
            raise ValueError(f"crop_views must be one of {CROP_VIEWS}, got {self.crop_views!r}")
        if self.crop_views == "tracking" and self.crop_from is None:
            raise ValueError("crop_views='tracking' needs crop_from (the size frames are resized to before the window)")

    @property
    def frame_size(self) -> Tuple[int, int]:
        """(H, W) of the whole-frame scale the frame head is trained at (the relabel runs at it): ``crop_from``
        when every objective sees the window, else ``size``."""
        return tuple(self.crop_from) if self.item_crops else tuple(self.size)

    @property
    def item_crops(self) -> bool:
        """Whether the item itself (frames, refs, masks) may be a ``crop_from`` window."""
        return self.crop_from is not None and self.crop_views == "all"


@dataclass
class SkipCurriculum:
    """``max_skip`` growing linearly from ``start`` to ``end`` over ``steps`` training steps (STM-style).

    ``curriculum.apply(dataset, step)`` sets ``dataset.max_skip`` and returns the value.
    """

    start: int = 1
    end: int = 25
    steps: int = 10_000

    def __call__(self, step: int) -> int:
        frac = min(max(step / max(self.steps, 1), 0.0), 1.0)
        return max(1, int(round(self.start + frac * (self.end - self.start))))

    def apply(self, dataset: "ClipDataset", step: int) -> int:
        dataset.max_skip = self(step)
        return dataset.max_skip


def sample_clip_indices(rng: np.random.Generator, length: int, num_frames: int, max_skip: int) -> np.ndarray:
    """(T,) increasing frame indices: steps uniform in 1..max_skip, shrunk to fit the video, random start.
    A video shorter than T frames repeats its last frame (indices clamped at the end)."""
    if length < num_frames:
        return np.minimum(np.arange(num_frames), length - 1)
    steps = rng.integers(1, max_skip + 1, size=num_frames - 1)
    while steps.sum() > length - 1:  # clamp at the ends: shorten the longest step until the clip fits
        steps[int(np.argmax(steps))] -= 1
    start = int(rng.integers(0, length - int(steps.sum())))
    return start + np.concatenate([[0], np.cumsum(steps)]).astype(np.int64)


def sample_reference_indices(rng: np.random.Generator, length: int, clip: Sequence[int], num_refs: int) -> np.ndarray:
    """(R,) sorted frame indices outside ``clip`` (without replacement when enough frames remain)."""
    outside = np.setdiff1d(np.arange(length), np.asarray(clip))
    pool = outside if len(outside) else np.arange(length)
    return np.sort(rng.choice(pool, size=num_refs, replace=len(pool) < num_refs)).astype(np.int64)


def _resize_frame(frame: np.ndarray, size: Tuple[int, int]) -> torch.Tensor:
    """(H0, W0, 3) uint8 -> (3, H, W) float32 in [0, 1], bilinear."""
    h, w = size
    if frame.shape[:2] != (h, w):
        frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float().div_(255.0)


def _resize_mask(mask: np.ndarray, size: Tuple[int, int], *, hard: bool) -> torch.Tensor:
    """(H0, W0) float in [0, 1] -> (1, H, W) float32; nearest for hard masks, bilinear for soft ones."""
    h, w = size
    mask = mask.astype(np.float32)
    if mask.shape != (h, w):
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST if hard else cv2.INTER_LINEAR)
    return torch.from_numpy(np.clip(mask, 0.0, 1.0)).unsqueeze(0)


class SharedSkip:
    """``max_skip`` kept in the shared-memory ``_state`` tensor ``(epoch, max_skip)`` of a clip dataset, so that
    DataLoader workers see the skip curriculum set in the main process."""

    _state: torch.Tensor

    @property
    def max_skip(self) -> int:
        return int(self._state[1])

    @max_skip.setter
    def max_skip(self, value: int) -> None:
        if value < 1:
            raise ValueError(f"max_skip must be >= 1, got {value}")
        self._state[1] = int(value)


class ClipDataset(SharedSkip, Dataset):
    """Random clips (+ reference frames, + pseudo-masks) from a :class:`VideoCollection`.

    Item ``index`` reads video ``index % len(collection)``, so each pass over ``clips_per_video * len(collection)``
    items visits every video equally. ``mask_provider(video_name, frame_index)`` gives soft pseudo-masks; without
    it the video's own masks are used (foreground = id > 0 and not void), else ``mask_valid`` is False and the
    masks are zeros. ``augment`` (e.g. :class:`selfvos.data.augment.ClipAugment`) maps an item to an item and
    runs under a torch RNG seeded from the item seed.
    """

    def __init__(self, collection: VideoCollection, cfg: ClipSamplerConfig, mask_provider: Optional[MaskProvider] = None,
                 augment: Optional[ClipAugmenter] = None, clips_per_video: int = 1) -> None:
        if len(collection) == 0:
            raise ValueError(f"{collection.source or 'collection'}: no videos to sample clips from")
        if clips_per_video < 1:
            raise ValueError(f"clips_per_video must be >= 1, got {clips_per_video}")
        self.collection, self.cfg = collection, cfg
        self.videos: List[LazyVideo] = list(collection)
        self.mask_provider, self.augment, self.clips_per_video = mask_provider, augment, clips_per_video
        self._state = torch.tensor([0, cfg.max_skip], dtype=torch.int64).share_memory_()  # (epoch, max_skip)

    def __len__(self) -> int:
        return len(self.videos) * self.clips_per_video

    @property
    def epoch(self) -> int:
        return int(self._state[0])

    def set_epoch(self, epoch: int) -> None:
        self._state[0] = int(epoch)

    def item_seed(self, index: int) -> np.random.SeedSequence:
        return np.random.SeedSequence([self.cfg.seed, self.epoch, int(index)])

    def _window(self, rng: np.random.Generator, crop: bool, crop_p: float = 1.0) -> Window:
        """A view: (size frames are resized to, (rows, columns) cut from them). With ``crop``, a random
        ``size`` window of frames at ``crop_from`` (with probability ``crop_p``), else whole frames at
        ``size``. Nothing is drawn without ``crop`` (nor a coin at ``crop_p`` 1), so items stay identical
        to those of earlier runs."""
        (h, w) = self.cfg.size
        whole = ((h, w), (slice(0, h), slice(0, w)))
        if not crop or tuple(self.cfg.crop_from) == (h, w) or (crop_p < 1.0 and rng.random() >= crop_p):
            return whole
        fh, fw = self.cfg.crop_from
        y, x = int(rng.integers(0, fh - h + 1)), int(rng.integers(0, fw - w + 1))
        return (fh, fw), (slice(y, y + h), slice(x, x + w))

    def _frames(self, video: LazyVideo, indices: np.ndarray, window: Window) -> torch.Tensor:
        """(K, 3, H, W) float frames in [0, 1], resized and cut as ``window`` says."""
        if not len(indices):
            return torch.zeros(0, 3, *self.cfg.size)
        size, (rows, cols) = window
        return torch.stack([_resize_frame(video.frame(int(i)), size)[:, rows, cols] for i in indices])

    def _masks(self, video: LazyVideo, indices: np.ndarray, window: Window) -> Tuple[torch.Tensor, torch.Tensor]:
        """(K, 1, H, W) float masks and (K,) validity for the given frames, cut like the frames."""
        out = torch.zeros(len(indices), 1, *self.cfg.size)
        valid = torch.zeros(len(indices), dtype=torch.bool)
        annotated = None if self.mask_provider is not None else set(video.annotated_indices())
        size, (rows, cols) = window
        for k, i in enumerate(int(i) for i in indices):
            mask = None
            if self.mask_provider is not None:
                soft = self.mask_provider(video.name, i)
                if soft is not None:
                    mask = _resize_mask(np.asarray(soft), size, hard=False)
            elif i in annotated:
                ids = video.mask(i)
                if ids is not None:
                    mask = _resize_mask((ids > 0) & (ids != video.void_value), size, hard=True)
            if mask is not None:
                out[k], valid[k] = mask[:, rows, cols], True
        return out, valid

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"clip {index} out of range for {len(self)} clips")
        video_index = index % len(self.videos)
        video = self.videos[video_index]
        rng = np.random.default_rng(self.item_seed(index))
        clip = sample_clip_indices(rng, len(video), self.cfg.num_frames, self.max_skip)
        refs = sample_reference_indices(rng, len(video), clip, self.cfg.num_refs)
        window = self._window(rng, self.cfg.item_crops, self.cfg.crop_p)
        item = {
            "frames": self._frames(video, clip, window),
            "refs": self._frames(video, refs, window),
            "video_index": torch.tensor(video_index, dtype=torch.int64),
            "frame_indices": torch.from_numpy(clip),
            "ref_indices": torch.from_numpy(refs),
        }
        item["pseudo_masks"], item["mask_valid"] = self._masks(video, clip, window)
        item["ref_masks"], item["ref_valid"] = self._masks(video, refs, window)
        if self.cfg.crop_views == "tracking":  # drawn last: the whole-frame view above is unchanged
            item["track_frames"] = self._frames(video, clip, self._window(rng, crop=True))
        if self.augment is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(np.random.SeedSequence([self.cfg.seed, self.epoch, int(index), 1]).generate_state(1)[0]))
                item = self.augment(item)
        if self.cfg.flow:
            item["flow"] = clip_flow(item["frames"])
        return item


def clip_flow(frames: torch.Tensor, preset: str = "medium") -> torch.Tensor:
    """frames (T, 3, H, W) float in [0, 1] -> (T-1, 2, H, W) float32 DIS flow (dx, dy) in pixels from frame t to t+1."""
    from selfvos.pseudo.flow import dis_flow

    images = (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    flows = [dis_flow(images[t], images[t + 1], preset) for t in range(len(images) - 1)]
    if not flows:
        return torch.zeros(0, 2, *frames.shape[-2:])
    return torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).contiguous()
