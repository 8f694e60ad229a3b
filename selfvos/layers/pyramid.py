"""Pyramid dilated blocks shared by the saliency-style zero-shot heads (PDB, AGS).

:class:`PyramidDilatedConv` (PDB's "PDC" module; AGS stacks three of them in its segmentation branch) reads one
feature map x (N, C, H, W) through parallel branches that keep the grid, concatenates them on channels and fuses
them by a 1x1 convolution::

    y = fuse([c(x), b_r1(x), ..., b_rK(x), p(x)])         (N, out_channels, H, W)

- centre ``c``: x itself (PDB concatenates the input unchanged) or a 1x1 convolution C -> B (AGS);
- ``b_r``: a 3x3 convolution C -> B with dilation r (padding r, so the grid is kept), one per rate;
- ``p`` (optional, AGS): average pooling with window and stride ``pool`` (ceil mode), 1x1 convolution C -> B,
  bilinear upsampling back to (H, W) (an image-level context branch);
- fuse: 1x1 convolution to ``out_channels``.

Every convolution here is followed by a normalisation and a ReLU. GroupNorm (groups = gcd(channels, 8)) stands in
for the papers' frozen BatchNorm: it normalises each frame alone, so no statistics are shared across the frames of
a clip (the causal heads depend on that), and the fine-tuning recipes freeze BatchNorm anyway.

"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn



def conv_norm_relu(in_channels: int, out_channels: int, kernel: int = 1, dilation: int = 1,
                   stride: int = 1) -> nn.Sequential:
    """Conv (no bias, same padding ``dilation * (kernel // 2)``) + GroupNorm + ReLU: (N, C_in, H, W) ->
    (N, C_out, ceil(H / stride), ceil(W / stride))."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=dilation * (kernel // 2),
                  dilation=dilation, bias=False),
        nn.GroupNorm(math.gcd(out_channels, 8), out_channels), nn.ReLU(inplace=True))


class PyramidDilatedConv(nn.Module):
    """Parallel dilated 3x3 convolutions, concatenated and fused; see the module docstring.

    in_channels C, branch_channels B (per branch), rates: the dilations of the 3x3 branches, keep_input: the
    centre branch is x itself (True, PDB) or a 1x1 convolution C -> B (False, AGS), pool: window of the pooling
    branch (None: no such branch), out_channels: of the fusing 1x1 convolution.
    Attributes: ``centre`` (Identity or conv), ``dilated`` (one conv per rate, in ``rates`` order), ``pooled``
    (None or conv), ``fuse``.
    """

    def __init__(self, in_channels: int, branch_channels: int, rates: Sequence[int], out_channels: int,
                 keep_input: bool = False, pool: Optional[int] = None) -> None:
        super().__init__()
        if not rates or any(r < 1 for r in rates):
            raise ValueError(f"rates must be a non-empty list of dilations >= 1, got {list(rates)}")
        if pool is not None and pool < 1:
            raise ValueError(f"pool must be None or >= 1, got {pool}")
        self.rates = tuple(int(r) for r in rates)
        self.pool = pool
        self.centre = nn.Identity() if keep_input else conv_norm_relu(in_channels, branch_channels)
        self.dilated = nn.ModuleList(conv_norm_relu(in_channels, branch_channels, 3, r) for r in self.rates)
        self.pooled = None if pool is None else conv_norm_relu(in_channels, branch_channels)
        concat = (in_channels if keep_input else branch_channels) + branch_channels * (
            len(self.rates) + (pool is not None))
        self.fuse = conv_norm_relu(concat, out_channels)
        self.out_channels = out_channels

    def branches(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, C, H, W) -> the concatenated branches (N, C_concat, H, W), before the fusion."""
        parts = [self.centre(x)] + [branch(x) for branch in self.dilated]
        if self.pooled is not None:
            context = self.pooled(F.avg_pool2d(x, self.pool, self.pool, ceil_mode=True))
            parts.append(F.interpolate(context, size=x.shape[-2:], mode="bilinear", align_corners=False))
        return torch.cat(parts, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.branches(x))


__all__ = ["PyramidDilatedConv", "conv_norm_relu"]
