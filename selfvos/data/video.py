"""The one video sample type, and the lazy per-video / per-collection interfaces every reader implements.

Conventions (all readers, all models):
- frames: ``uint8`` array ``(T, H, W, 3)``, RGB.
- masks: ``uint8`` array ``(T, H, W)`` of object ids; 0 = background, 1..N = objects,
  ``void_value`` (255) = ignore. Binary datasets (DAVIS-2016) use ids {0, 1}.
- ``annotated``: ``bool (T,)``, which frames carry a human/pseudo mask (YouTube-VOS is sparse).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Sequence

import numpy as np

from selfvos.errors import SelfvosInputError

VOID = 255


@dataclass
class VideoSample:
    """A (part of a) video held in memory: frames, optional masks, names and provenance."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    frame_names: List[str]  # len T, stems without extension, e.g. "00000"
    name: str = "video"
    masks: Optional[np.ndarray] = None  # (T, H, W) uint8 object ids
    annotated: Optional[np.ndarray] = None  # (T,) bool; None = all frames annotated when masks given
    fps: Optional[float] = None
    source: str = ""  # where it came from (path or generator spec)
    void_value: int = VOID
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        f = self.frames
        if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8:
            raise ValueError(f"{self.source or self.name}: frames must be uint8 (T, H, W, 3), got {f.dtype} {f.shape}")
        if len(self.frame_names) != f.shape[0]:
            raise ValueError(f"{self.source or self.name}: {len(self.frame_names)} frame names for {f.shape[0]} frames")
        if self.masks is not None:
            m = self.masks
            if m.shape != f.shape[:3] or m.dtype != np.uint8:
                raise ValueError(
                    f"{self.source or self.name}: masks must be uint8 {f.shape[:3]}, got {m.dtype} {m.shape}"
                )
            if self.annotated is None:
                self.annotated = np.ones(f.shape[0], dtype=bool)

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple:
        """(H, W)."""
        return tuple(self.frames.shape[1:3])

    @property
    def object_ids(self) -> List[int]:
        """Object ids present in the annotated masks (void and background excluded)."""
        if self.masks is None:
            return []
        ids = np.unique(self.masks[self.annotated]) if self.annotated is not None else np.unique(self.masks)
        return [int(i) for i in ids if i != 0 and i != self.void_value]

    def subset(self, indices: Sequence[int]) -> "VideoSample":
        idx = np.asarray(list(indices), dtype=np.int64)
        return VideoSample(
            frames=self.frames[idx],
            frame_names=[self.frame_names[i] for i in idx],
            name=self.name,
            masks=None if self.masks is None else self.masks[idx],
            annotated=None if self.annotated is None else self.annotated[idx],
            fps=self.fps,
            source=self.source,
            void_value=self.void_value,
            meta=dict(self.meta),
        )


class LazyVideo(ABC):
    """One video that decodes frames on demand. Readers subclass it and implement
    ``_read_frame`` (and ``_read_mask`` when they have annotations).

    ``load(indices)`` returns a :class:`VideoSample` of just those frames, so a 10-minute video is
    never decoded into memory at once; ``iter_frames()`` streams them.
    """

    name: str = "video"
    source: str = ""
    fps: Optional[float] = None
    void_value: int = VOID

    @property
    @abstractmethod
    def frame_names(self) -> List[str]:
        """Frame stems in temporal order, e.g. ``["00000", "00001", ...]``."""

    def __len__(self) -> int:
        return len(self.frame_names)

    @property
    def has_masks(self) -> bool:
        return False

    def annotated_indices(self) -> List[int]:
        """Indices of frames that carry a mask (all of them for DAVIS, every 5th for YouTube-VOS)."""
        return list(range(len(self))) if self.has_masks else []

    @abstractmethod
    def _read_frame(self, index: int) -> np.ndarray:
        """Decode frame ``index`` (0 <= index < len) as (H, W, 3) uint8 RGB."""

    def _read_mask(self, index: int) -> Optional[np.ndarray]:
        return None

    def frame(self, index: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.source}: frame {index} out of range for {len(self)} frames")
        return self._read_frame(index % len(self))

    def mask(self, index: int) -> Optional[np.ndarray]:
        """(H, W) uint8 ids, or None when the frame is not annotated."""
        return self._read_mask(index % len(self)) if self.has_masks else None

    def iter_frames(self, indices: Optional[Sequence[int]] = None) -> Iterator[np.ndarray]:
        for i in range(len(self)) if indices is None else indices:
            yield self.frame(i)

    def verify(self) -> None:
        """Decode every frame and mask once; raise ``SelfvosInputError`` at the first one that cannot be used
        (unreadable, or a frame whose size differs from frame 0's). ``selfvos data inspect`` calls this."""
        names, size = self.frame_names, None
        for index in range(len(self)):
            shape = self.frame(index).shape
            if size is None:
                size = shape
            elif shape != size:
                raise SelfvosInputError(self.source or self.name, f"frame {names[index]} is {shape[1]}x{shape[0]} "
                                                                  f"(WxH) but frame {names[0]} is {size[1]}x{size[0]}")
        for index in self.annotated_indices():
            self.mask(index)

    def load(self, indices: Optional[Sequence[int]] = None, *, with_masks: bool = True) -> VideoSample:
        idx = list(range(len(self))) if indices is None else [int(i) % len(self) for i in indices]
        frames = np.stack([self.frame(i) for i in idx]) if idx else np.zeros((0, 1, 1, 3), np.uint8)
        masks = annotated = None
        if with_masks and self.has_masks:
            annotated_set = set(self.annotated_indices())
            masks = np.zeros(frames.shape[:3], np.uint8)
            annotated = np.zeros(len(idx), bool)
            for k, i in enumerate(idx):
                if i in annotated_set:
                    m = self.mask(i)
                    if m is not None:
                        masks[k] = m
                        annotated[k] = True
        names = self.frame_names
        return VideoSample(
            frames=frames,
            frame_names=[names[i] for i in idx],
            name=self.name,
            masks=masks,
            annotated=annotated,
            fps=self.fps,
            source=self.source,
            void_value=self.void_value,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, frames={len(self)}, masks={self.has_masks}, source={self.source!r})"


def first_frame_mask(video: LazyVideo) -> Optional[np.ndarray]:
    """The annotation of frame 0 only (None when frame 0 has none), void set to background: the mask a
    one-shot run starts from."""
    if not video.has_masks or 0 not in video.annotated_indices():
        return None
    mask = video.mask(0)
    if mask is None:
        return None
    mask = mask.copy()
    mask[mask == video.void_value] = 0
    return mask


class VideoView(LazyVideo):
    """Base of the wrappers that read another :class:`LazyVideo`'s frames through a check or a cache: the name,
    source, fps, frame names and length are the wrapped video's; a subclass implements ``_read_frame``."""

    def __init__(self, video: LazyVideo) -> None:
        self.video = video
        self.name, self.source, self.fps = video.name, video.source, video.fps

    @property
    def frame_names(self) -> List[str]:
        return self.video.frame_names

    def __len__(self) -> int:
        return len(self.video)


class InMemoryVideo(LazyVideo):
    """Wraps a :class:`VideoSample` (e.g. a synthetic video) in the lazy interface."""

    def __init__(self, sample: VideoSample) -> None:
        self.sample = sample
        self.name, self.source, self.fps, self.void_value = sample.name, sample.source, sample.fps, sample.void_value

    @property
    def frame_names(self) -> List[str]:
        return list(self.sample.frame_names)

    @property
    def has_masks(self) -> bool:
        return self.sample.masks is not None

    def annotated_indices(self) -> List[int]:
        if self.sample.masks is None:
            return []
        return [int(i) for i in np.flatnonzero(self.sample.annotated)]

    def _read_frame(self, index: int) -> np.ndarray:
        return self.sample.frames[index]

    def _read_mask(self, index: int) -> Optional[np.ndarray]:
        return self.sample.masks[index] if self.sample.masks is not None else None


class VideoCollection:
    """A named, ordered set of videos (a dataset split). Readers return one of these."""

    def __init__(self, videos: Sequence[LazyVideo], *, source: str = "", kind: str = "") -> None:
        self._videos = {}
        for video in videos:
            if video.name in self._videos:
                first = self._videos[video.name].source or video.name
                raise SelfvosInputError(source or video.source, f"two videos named {video.name!r} ({first} and "
                                                                f"{video.source or video.name}); names must be unique")
            self._videos[video.name] = video
        self.source, self.kind = source, kind

    @property
    def names(self) -> List[str]:
        return list(self._videos)

    def __len__(self) -> int:
        return len(self._videos)

    def __iter__(self) -> Iterator[LazyVideo]:
        return iter(self._videos.values())

    def __getitem__(self, key) -> LazyVideo:
        if isinstance(key, int):
            return list(self._videos.values())[key]
        try:
            return self._videos[key]
        except KeyError:
            raise KeyError(f"{self.source}: no video {key!r}; available: {self.names}") from None

    def select(self, names: Optional[Sequence[str]]) -> "VideoCollection":
        """The videos named in ``names`` (in that order; all when empty); an unknown name is a
        ``SelfvosInputError`` listing the available ones."""
        if not names:
            return self
        unknown = [n for n in names if n not in self._videos]
        if unknown:
            raise SelfvosInputError(self.source or "--sequences", f"no video(s) {unknown}; available: {self.names}")
        return VideoCollection([self[n] for n in names], source=self.source, kind=self.kind)

    def __repr__(self) -> str:
        return f"VideoCollection(kind={self.kind!r}, videos={len(self)}, source={self.source!r})"
