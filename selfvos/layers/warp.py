"""Pixel coordinates and flow warping, shared by the motion objectives (flow explanation, SfM-Net, MOREL).

Flow convention (as ``selfvos.pseudo.flow``): ``flow[:, :, y, x] = (dx, dy)`` in pixels, pixel (x, y) of frame
t moves to ``(x + dx, y + dy)`` in frame t+1.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def pixel_grid(height: int, width: int, *, normalized: bool = False, device: Optional[torch.device] = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(2, H, W) coordinates (x, y) of every pixel centre: pixels ``0..W-1`` / ``0..H-1``, or with ``normalized``
    in [-1, 1] (``align_corners=True`` convention: -1 and 1 are the centres of the first and last pixel)."""
    ys = torch.arange(height, device=device, dtype=dtype)
    xs = torch.arange(width, device=device, dtype=dtype)
    if normalized:
        ys = ys * (2.0 / max(height - 1, 1)) - 1.0
        xs = xs * (2.0 / max(width - 1, 1)) - 1.0
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y])


def backward_warp(image: torch.Tensor, flow: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """Sample ``image`` (B, C, H, W) of frame t+1 at ``p + flow(p)`` for every pixel p of frame t: with the
    true flow the result reconstructs frame t. flow (B, 2, H, W) in pixels; bilinear, differentiable in both."""
    b, _, h, w = flow.shape
    where = pixel_grid(h, w, device=flow.device, dtype=flow.dtype).unsqueeze(0) + flow  # (B, 2, H, W) pixels
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=flow.device, dtype=flow.dtype)
    normalized = where * scale.view(1, 2, 1, 1) - 1.0
    return F.grid_sample(image, normalized.permute(0, 2, 3, 1), mode="bilinear", padding_mode=padding_mode,
                         align_corners=True)
