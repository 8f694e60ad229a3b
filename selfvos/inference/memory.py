"""Bounded context bank for label propagation: annotated anchor frames + a ring buffer of recent frames.

The bank holds, per frame, the key features (any tensor: the propagator stores them already tiled for
:class:`~selfvos.inference.propagation.LocalWindowAffinity`) and the soft labels ``(L, h, w)``
(channel 0 background, then one channel per object). Its size never exceeds
``max_anchors + recent`` frames, so memory does not grow with the video length:

* anchors: frames whose mask was given. The first one is kept forever; when more than ``max_anchors``
  are given, the oldest anchor after the first is dropped.
* recent: the last ``recent`` propagated frames, in a ring buffer (the oldest is overwritten).

When objects are added on a later frame, :meth:`ContextBank.grow_labels` pads every stored label map
with zero channels and :meth:`ContextBank.known` records that those frames know nothing about the new
objects, so propagation judges a new object only by the frames stored after it was given.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch


@dataclass
class ContextEntry:
    """One stored frame: ``key`` (features, any layout), ``labels`` (L, h, w) soft labels and the number
    of label channels (background + objects) that existed when it was stored."""

    key: torch.Tensor
    labels: torch.Tensor
    frame_index: int
    known_channels: int = 0


class ContextBank:
    """First frame (+ later annotated frames, at most ``max_anchors``) and a ring of the last ``recent`` frames."""

    def __init__(self, recent: int = 10, max_anchors: int = 1) -> None:
        if recent < 0 or max_anchors < 1:
            raise ValueError(f"need recent >= 0 and max_anchors >= 1, got recent={recent}, max_anchors={max_anchors}")
        self.recent, self.max_anchors = int(recent), int(max_anchors)
        self.clear()

    def clear(self) -> None:
        """Forget every frame."""
        self._anchors: List[ContextEntry] = []
        self._ring: List[Optional[ContextEntry]] = [None] * self.recent
        self._cursor = 0
        self._labels_cache: Optional[torch.Tensor] = None

    @property
    def capacity(self) -> int:
        """Most frames the bank can hold."""
        return self.max_anchors + self.recent

    @property
    def entries(self) -> List[ContextEntry]:
        """Stored frames: anchors first, then recent frames oldest to newest."""
        ring = self._ring[self._cursor:] + self._ring[: self._cursor]
        return self._anchors + [e for e in ring if e is not None]

    def __len__(self) -> int:
        return len(self._anchors) + sum(e is not None for e in self._ring)

    @property
    def frame_indices(self) -> List[int]:
        return [e.frame_index for e in self.entries]

    def add(self, key: torch.Tensor, labels: torch.Tensor, frame_index: int, anchor: bool = False) -> None:
        """Store a frame; ``anchor=True`` for a frame whose mask was given (kept, not cycled)."""
        if self._anchors and labels.shape[0] != self._anchors[0].labels.shape[0]:
            raise ValueError(f"labels have {labels.shape[0]} channels, the bank {self._anchors[0].labels.shape[0]}")
        entry = ContextEntry(key, labels, int(frame_index), labels.shape[0])
        if anchor or not self._anchors:
            self._anchors.append(entry)
            if len(self._anchors) > self.max_anchors:
                del self._anchors[1]  # the first frame stays; drop the oldest later anchor
        elif self.recent:
            self._ring[self._cursor] = entry
            self._cursor = (self._cursor + 1) % self.recent
        self._labels_cache = None

    def keys(self) -> List[torch.Tensor]:
        """Stored keys, one per frame, in :attr:`entries` order."""
        return [e.key for e in self.entries]

    def labels(self) -> torch.Tensor:
        """Stored labels stacked (N, L, h, w), in :attr:`entries` order."""
        if self._labels_cache is None:
            self._labels_cache = torch.stack([e.labels for e in self.entries])
        return self._labels_cache

    def known(self) -> torch.Tensor:
        """(N, L) bool: which label channels each stored frame knows (False for objects added after it)."""
        entries = self.entries
        channels = torch.arange(entries[0].labels.shape[0])
        return torch.stack([channels < e.known_channels for e in entries])

    def grow_labels(self, num_labels: int) -> None:
        """Pad every stored label map with zero channels up to ``num_labels`` (new objects)."""
        for entry in self.entries:
            missing = num_labels - entry.labels.shape[0]
            if missing > 0:
                pad = entry.labels.new_zeros((missing, *entry.labels.shape[1:]))
                entry.labels = torch.cat([entry.labels, pad])
        self._labels_cache = None
