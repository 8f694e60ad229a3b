"""Temporal prior for zero-shot segmentation: the previous output masks, carried to the current frame.

Zero-shot has no given mask, but it has its own answers for the frames already segmented. This prior
propagates them with the one-shot machinery (``propagation.py``): context = the first frame + the last
``frames`` frames, top-k local-window affinity of unit-norm backbone features, softmax at ``temperature``:

    prior_t(p) = sum_k softmax_k(<f_t(p), f_m> / T) * y_m,    y_m = output foreground of context cell m

Unlike an exponential moving average of the score maps, the affinity follows the object when it moves,
and what it carries is the *refined* output (after GrabCut), so the edges found on earlier frames guide
the current one. Measured (zero-shot, weight 0.25 with the EMA kept): DAVIS-2016 train (GT only to choose)
60.1 -> 61.9 J&F (carrying the unrefined fused maps instead, in a trial: 60.4); davis2016-val-dev 59.3 -> 57.3,
so it is off by default (``ZeroShotConfig.propagation_weight``; ``selfvos segment --prior-weight``).

>>> prior = PropagatedPrior(frames=5)
>>> prior.predict(features)             # None on the first frame, else (h, w) foreground in [0, 1]
>>> prior.remember(features, output)    # output: (H', W') foreground of the frame, any size
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from selfvos.inference.memory import ContextBank
from selfvos.inference.propagation import LocalWindowAffinity, propagate_labels


class PropagatedPrior:
    """The last outputs (first frame + ``frames`` previous) propagated to a new frame; state only, no weights.

    features: unit-norm (C, h, w) per frame (cosine affinity), the same grid for every frame of a video.
    """

    def __init__(self, frames: int = 5, topk: int = 10, temperature: float = 0.07, radius: int = 12) -> None:
        if frames < 0 or topk < 1 or temperature <= 0 or radius < 0:
            raise ValueError(f"need frames >= 0, topk >= 1, temperature > 0, radius >= 0; got frames={frames}, "
                             f"topk={topk}, temperature={temperature}, radius={radius}")
        self.temperature = float(temperature)
        self.affinity = LocalWindowAffinity(radius, topk)
        self.bank = ContextBank(frames, max_anchors=1)
        self._index = 0

    def reset(self) -> None:
        """Forget the video."""
        self.bank.clear()
        self._index = 0

    def predict(self, features: torch.Tensor) -> Optional[torch.Tensor]:
        """Unit-norm features (C, h, w) -> propagated foreground (h, w) in [0, 1], or None before any output."""
        if not len(self.bank):
            return None
        values, indices = self.affinity.topk(features.float(), self.bank.keys())
        soft = propagate_labels(values, indices, self.bank.labels(), self.temperature, tuple(features.shape[-2:]))
        return soft[1]

    def remember(self, features: torch.Tensor, foreground: np.ndarray) -> None:
        """Store a segmented frame: features (C, h, w) and its output foreground (H', W') in [0, 1] (area-averaged
        to the feature grid)."""
        fg = torch.from_numpy(np.clip(np.asarray(foreground, np.float32), 0.0, 1.0))[None, None]
        fg = F.interpolate(fg, size=tuple(features.shape[-2:]), mode="area")[0].to(features.device)
        self.bank.add(self.affinity.tile_keys(features.float()), torch.cat([1 - fg, fg]), self._index)
        self._index += 1
