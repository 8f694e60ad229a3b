"""Refinement decoder (STM / RGMP): from the 1/16 map up to 1/4 with skip connections, then a prediction.

``ResBlock``: ``x + conv(relu(conv(relu(x))))``. ``Refine``: the skip feature is projected (3x3 conv +
ResBlock), the coarser decoder map is upsampled bilinearly and added, then a ResBlock. The decoder runs
``ResBlock(conv(x16))`` -> Refine with the 1/8 skip -> Refine with the 1/4 skip -> 3x3 conv to the
prediction at 1/4; upsampling to the input size is left to the caller.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    """Pre-activation residual block of two 3x3 convolutions (a 3x3 projection when channels change)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = None if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.conv2(F.relu(self.conv1(F.relu(x))))
        return (x if self.skip is None else self.skip(x)) + r


class Refine(nn.Module):
    """Merge a skip feature (N, C_skip, H, W) with a coarser decoder map (N, D, h, w) -> (N, D, H, W)."""

    def __init__(self, skip_channels: int, dim: int) -> None:
        super().__init__()
        self.project = nn.Conv2d(skip_channels, dim, 3, padding=1)
        self.res_skip = ResBlock(dim, dim)
        self.res_merged = ResBlock(dim, dim)

    def forward(self, skip: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        s = self.res_skip(self.project(skip))
        m = s + F.interpolate(coarse, size=s.shape[-2:], mode="bilinear", align_corners=False)
        return self.res_merged(m)


class RefinementDecoder(nn.Module):
    """(N, C_in, H/16, W/16) + skips [(N, C_8, H/8, W/8), (N, C_4, H/4, W/4)] -> (N, out_channels, H/4, W/4)."""

    def __init__(self, in_channels: int, skip_channels: Sequence[int], dim: int = 256, out_channels: int = 2) -> None:
        super().__init__()
        self.project = nn.Conv2d(in_channels, dim, 3, padding=1)
        self.res = ResBlock(dim, dim)
        self.refine = nn.ModuleList([Refine(c, dim) for c in skip_channels])
        self.predict = nn.Conv2d(dim, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        m = self.res(self.project(x))
        for refine, skip in zip(self.refine, skips):
            m = refine(skip, m)
        return self.predict(F.relu(m))
