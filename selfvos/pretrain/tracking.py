"""Short-term granularity: differentiable forward-backward patch tracking on phi.

For a k x k patch p of phi(X_t) (k = ``patch_fraction`` of the feature side, centre c):

1. forward: correlate p with phi(X_{t+1}) (features L2-normalised per cell, response = mean cosine in
   [-1, 1]); the soft-argmax of ``softmax(R / tau)`` is the tracked centre p' (differentiable; a sharp
   tau = 0.05 so the peak is located precisely);
2. crop phi(X_{t+1}) at p' with ``grid_sample`` (differentiable in the features AND in p');
3. backward: correlate that crop with phi(X_t); the response is supervised by a Gaussian G_c centred on c
   with sigma = ``sigma_fraction * k`` cells.
The chain t -> t+1 -> t+2 -> t repeats step 1-2 once more before going back.

Loss choice (the paper's form is unverified): ``KL(G_c || softmax(R_back / tau_loss))``, i.e. softmax
cross-entropy against the normalised Gaussian minus the Gaussian's entropy, so a perfect track scores 0.
Softmax-CE is invariant to a constant shift of the response and has one optimum at the Gaussian, where
a per-cell sigmoid BCE would need calibrated absolute responses. tau_loss (0.1) is softer than the
soft-argmax tau: the response's width is asked to match the Gaussian's, which a near-one-hot softmax
cannot. Unlike the released code, gradients
reach phi through every step, including the peak location.
Coordinates are (y, x) in feature cells, cell centres at integers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TrackingConfig:
    patch_fraction: float = 0.25  # patch side / feature-map side
    temperature: float = 0.05  # tau of the soft-argmax that locates the tracked peak
    loss_temperature: float = 0.1  # tau of the backward-response softmax compared with the Gaussian
    sigma_fraction: float = 0.25  # Gaussian sigma / patch side
    chain: bool = True  # also t -> t+1 -> t+2 -> t
    num_patches: int = 4  # patches per frame pair


def correlate(templates: torch.Tensor, features: torch.Tensor) -> Tuple[torch.Tensor, float]:
    """Per-sample cross-correlation: templates (B, C, k, k), features (B, C, H, W) -> (B, H, W), offset.

    ``R[b, y, x] = mean_{u,v} <templates[b,:,u,v], features[b,:,y+u-k//2, x+v-k//2]>`` (zero padding); the
    template centre sits at ``(y + offset, x + offset)`` with ``offset = (k-1)/2 - k//2`` (0 for odd k).
    Computed as one batched matmul of every template cell with every feature cell, (B, k*k, H*W),
    followed by summing the k*k shifted dot-product maps (a fixed one-hot conv): far faster on CPU
    than a grouped convolution with B groups.
    """
    b, c, k, _ = templates.shape
    h, w = features.shape[-2:]
    dots = templates.flatten(2).transpose(1, 2) @ features.flatten(2)  # (B, k*k, H*W)
    lo, hi = k // 2, (k - 1) // 2
    dots = F.pad(dots.reshape(b, k * k, h, w), (lo, hi, lo, hi))
    shift_sum = torch.eye(k * k, dtype=dots.dtype, device=dots.device).reshape(1, k * k, k, k)
    response = F.conv2d(dots, shift_sum).reshape(b, h, w)
    return response / (k * k), (k - 1) / 2 - k // 2


def cell_coordinates(h: int, w: int, offset: float, like: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    ys = torch.arange(h, dtype=like.dtype, device=like.device) + offset
    xs = torch.arange(w, dtype=like.dtype, device=like.device) + offset
    return ys, xs


def soft_argmax(response: torch.Tensor, offset: float, temperature: float) -> torch.Tensor:
    """Expected (y, x) under ``softmax(response / tau)``: (B, H, W) -> (B, 2)."""
    b, h, w = response.shape
    prob = torch.softmax(response.reshape(b, -1) / temperature, dim=1).reshape(b, h, w)
    ys, xs = cell_coordinates(h, w, offset, response)
    return torch.stack([(prob.sum(2) * ys).sum(1), (prob.sum(1) * xs).sum(1)], dim=1)


def crop(features: torch.Tensor, centers: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear k x k crop centred at continuous ``centers`` (B, 2) (y, x): (B, C, H, W) -> (B, C, k, k).

    Exact slicing when the centres sit on the patch grid; differentiable in features and centres.
    """
    _, _, h, w = features.shape
    steps = torch.arange(size, dtype=features.dtype, device=features.device) - (size - 1) / 2
    ys = centers[:, 0:1] + steps  # (B, k)
    xs = centers[:, 1:2] + steps
    gy = (2 * ys / max(h - 1, 1) - 1)[:, :, None].expand(-1, size, size)
    gx = (2 * xs / max(w - 1, 1) - 1)[:, None, :].expand(-1, size, size)
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(features, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def gaussian_target(centers: torch.Tensor, h: int, w: int, offset: float, sigma: float) -> torch.Tensor:
    """Normalised Gaussian over response cells centred at ``centers`` (B, 2): -> (B, H*W), rows sum to 1."""
    ys, xs = cell_coordinates(h, w, offset, centers)
    d2 = (ys[None, :, None] - centers[:, 0, None, None]) ** 2 + (xs[None, None, :] - centers[:, 1, None, None]) ** 2
    g = torch.exp(-d2 / (2 * sigma**2)).reshape(centers.shape[0], -1)
    return g / g.sum(dim=1, keepdim=True)


class ForwardBackwardTracking(nn.Module):
    """Cycle tracking loss on a clip of features (B, T, C, h, w), T >= 2 (T >= 3 for the chain)."""

    def __init__(self, config: TrackingConfig | None = None) -> None:
        super().__init__()
        self.config = config or TrackingConfig()

    def patch_size(self, h: int, w: int) -> int:
        return max(1, min(h, w, round(self.config.patch_fraction * min(h, w))))

    def sample_centers(self, n: int, h: int, w: int, k: int, device: torch.device) -> torch.Tensor:
        """Random patch centres on the cell grid, patches fully inside: -> (n, 2) float."""
        top = torch.randint(0, h - k + 1, (n,), device=device)
        left = torch.randint(0, w - k + 1, (n,), device=device)
        return torch.stack([top, left], dim=1).float() + (k - 1) / 2

    def track(self, template: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """One forward step: -> (peak (B, 2), crop of ``target`` at the peak (B, C, k, k))."""
        response, offset = correlate(template, target)
        peak = soft_argmax(response, offset, self.config.temperature)
        return peak, crop(target, peak, template.shape[-1])

    def cycle_loss(self, path: torch.Tensor, centers: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Track a patch along ``path`` (B, L, C, h, w) and back to path[:, 0].

        Returns (per-sample KL (B,), forward peak in path[:, 1] (B, 2)).
        """
        start = path[:, 0]
        k = self.patch_size(*start.shape[-2:])
        template = crop(start, centers, k)
        first_peak = None
        for step in range(1, path.shape[1]):
            peak, template = self.track(template, path[:, step])
            first_peak = peak if first_peak is None else first_peak
        response, offset = correlate(template, start)
        b, h, w = response.shape
        log_prob = torch.log_softmax(response.reshape(b, -1) / self.config.loss_temperature, dim=1)
        target = gaussian_target(centers, h, w, offset, self.config.sigma_fraction * k)
        kl = (target * (target.clamp_min(1e-12).log() - log_prob)).sum(dim=1)
        return kl, first_peak

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, T, C, h, w) -> scalar: mean KL over all (t, t+1) cycles and, if enabled, (t, t+1, t+2) chains."""
        b, t, _, h, w = features.shape
        if t < 2:
            raise ValueError(f"tracking needs T >= 2 frames, got features {tuple(features.shape)}")
        feats = F.normalize(features, dim=2)
        n = self.config.num_patches
        k = self.patch_size(h, w)
        lengths = [2] + ([3] if self.config.chain and t >= 3 else [])
        losses = []
        for length in lengths:
            # every window of `length` consecutive frames, every patch: one batched cycle
            windows = torch.stack([feats[:, s:s + length] for s in range(t - length + 1)], dim=1)
            paths = windows.flatten(0, 1).repeat_interleave(n, dim=0)  # (B * windows * n, L, C, h, w)
            centers = self.sample_centers(paths.shape[0], h, w, k, features.device)
            kl, _ = self.cycle_loss(paths, centers)
            losses.append(kl.mean())
        return torch.stack(losses).mean()
