"""Windowed and global pixel matching shared by the matching heads (MUNet, FEELVOS, CFBI, CFBI+).

Every local function walks the (2R+1)^2 displacements of its window one at a time, so no affinity beyond the
window is ever formed and memory per frame is O(K H W) (or O((2R+1)^2 H W) for the correlation volume that is
the output itself), independent of the video length. Displacement ``(dy, dx)`` in ``-R..R`` is spaced by
``dilation`` pixels (atrous matching, CFBI+); positions outside the frame do not match.

- ``local_correlation(q, r, R, dilation, normalize)`` -> (N, (2R+1)^2, H, W): ``<q[p], r[p + d]>`` (cosine with
  ``normalize``), 0 outside the frame; channel ``(dy + R) * (2R+1) + (dx + R)``. MUNet's cost volume.
- ``embedding_distance(sq, bias)`` = ``1 - 2 / (1 + exp(sq + bias))`` (FEELVOS; CFBI adds a learnable bias per
  foreground / background), written as ``tanh((sq + bias) / 2)``; in [0, 1) for ``sq + bias >= 0``.
- ``global_matching(q, r, masks, stride)`` -> (N, K, H, W): per query pixel and object, the distance to the
  NEAREST reference pixel of that object (FEELVOS global matching to the first frame); ``stride`` keeps every
  l-th reference pixel in both directions (CFBI+ atrous global matching). An object with no reference pixel
  gets distance 1.
- ``local_matching(q, r, masks, radii, dilation)`` -> (N, len(radii), K, H, W): the same nearest distance
  restricted to the window of each radius around the pixel (FEELVOS local matching to the previous frame with
  one radius; CFBI's multi-local windows with several, computed in one pass).
"""
from __future__ import annotations

from typing import Iterator, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

Bias = Union[float, torch.Tensor]


def _displacements(radius: int, dilation: int) -> Iterator[Tuple[int, int]]:
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            yield dy * dilation, dx * dilation


def _shifted(padded: torch.Tensor, pad: int, dy: int, dx: int, size: Tuple[int, int]) -> torch.Tensor:
    """``x[..., y + dy, x + dx]`` for every (y, x) of the unpadded map, from ``x`` padded by ``pad``."""
    h, w = size
    return padded[..., pad + dy:pad + dy + h, pad + dx:pad + dx + w]


def _check(query: torch.Tensor, reference: torch.Tensor, radius: int, dilation: int) -> None:
    if query.shape != reference.shape:
        raise ValueError(f"query {tuple(query.shape)} and reference {tuple(reference.shape)} must have one shape")
    if radius < 0 or dilation < 1:
        raise ValueError(f"need radius >= 0 and dilation >= 1, got {radius}, {dilation}")


def local_correlation(query: torch.Tensor, reference: torch.Tensor, radius: int, dilation: int = 1,
                      normalize: bool = False) -> torch.Tensor:
    """(N, C, H, W) x (N, C, H, W) -> (N, (2R+1)^2, H, W) dot products (cosine with ``normalize``) in the window."""
    _check(query, reference, radius, dilation)
    if normalize:
        query, reference = F.normalize(query, dim=1), F.normalize(reference, dim=1)
    pad = radius * dilation
    padded = F.pad(reference, (pad, pad, pad, pad))  # zeros: no correlation outside the frame
    size = tuple(query.shape[-2:])
    return torch.stack([(query * _shifted(padded, pad, dy, dx, size)).sum(dim=1)
                        for dy, dx in _displacements(radius, dilation)], dim=1)


def embedding_distance(squared: torch.Tensor, bias: Bias = 0.0) -> torch.Tensor:
    """FEELVOS distance ``1 - 2 / (1 + exp(squared + bias))`` = ``tanh((squared + bias) / 2)``."""
    return torch.tanh((squared + bias) / 2)


def _squared_norms(x: torch.Tensor) -> torch.Tensor:
    return (x * x).sum(dim=1)


def global_matching(query: torch.Tensor, reference: torch.Tensor, masks: torch.Tensor, bias: Bias = 0.0,
                    stride: int = 1, chunk: int = 4096) -> torch.Tensor:
    """Nearest-neighbour distance of every query pixel to each object's reference pixels.

    Args:
        query: (N, C, H, W) embeddings of the frame to segment.
        reference: (N, C, Hr, Wr) embeddings of the reference frame (e.g. the first frame).
        masks: (N, K, Hr, Wr) object masks of the reference (bool, or probabilities thresholded at 0.5).
        bias: added to the squared distance before the FEELVOS transform (scalar or broadcastable to (N, K)).
        stride: atrous matching: only reference pixels at multiples of ``stride`` in y and x take part.
        chunk: query pixels per block (bounds the (chunk x Hr Wr) distance block).
    Returns:
        (N, K, H, W) distances ``embedding_distance(min_q ||e_p - e_q||^2, bias)``; 1 where an object has no
        reference pixel.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    n, c, h, w = query.shape
    k = masks.shape[1]
    ref = reference[..., ::stride, ::stride].flatten(2)  # (N, C, M)
    inside = (masks[..., ::stride, ::stride] > 0.5).flatten(2)  # (N, K, M)
    ref_norms = _squared_norms(ref)  # (N, M)
    q = query.flatten(2)  # (N, C, Q)
    out = []
    for start in range(0, h * w, chunk):
        qc = q[:, :, start:start + chunk]
        sq = (_squared_norms(qc).unsqueeze(2) + ref_norms.unsqueeze(1)
              - 2 * torch.bmm(qc.transpose(1, 2), ref)).clamp(min=0)  # (N, q, M)
        masked = torch.where(inside.unsqueeze(2), sq.unsqueeze(1), torch.full_like(sq, float("inf")).unsqueeze(1))
        out.append(masked.min(dim=-1).values)  # (N, K, q)
    nearest = torch.cat(out, dim=-1).reshape(n, k, h, w)
    return _finish(nearest, bias)


def _finish(nearest: torch.Tensor, bias: Bias) -> torch.Tensor:
    """min squared distances (inf = no pixel) -> distances, 1 where there was no pixel."""
    found = torch.isfinite(nearest)
    if isinstance(bias, torch.Tensor) and bias.dim() > 0:
        bias = bias.reshape(*bias.shape, *([1] * (nearest.dim() - bias.dim())))
    distance = embedding_distance(torch.where(found, nearest, torch.zeros_like(nearest)), bias)
    return torch.where(found, distance, torch.ones_like(distance))


def local_matching(query: torch.Tensor, reference: torch.Tensor, masks: torch.Tensor,
                   radii: Sequence[int] = (15,), dilation: int = 1, bias: Bias = 0.0) -> torch.Tensor:
    """Nearest distance to each object's reference pixels inside a window around every query pixel.

    Args:
        query, reference: (N, C, H, W) embeddings of the frame to segment and of the previous frame.
        masks: (N, K, H, W) the previous frame's object masks (bool, or probabilities thresholded at 0.5).
        radii: window radii R (window (2R+1)^2 positions spaced by ``dilation``); one pass serves all.
        bias: as in :func:`global_matching`.
    Returns:
        (N, len(radii), K, H, W) distances; 1 where the window holds no pixel of the object.
    """
    radii = tuple(int(r) for r in radii)
    if not radii:
        raise ValueError("radii: give at least one window radius")
    big = max(radii)
    _check(query, reference, big, dilation)
    pad = big * dilation
    size = tuple(query.shape[-2:])
    q_norms = _squared_norms(query)  # (N, H, W)
    ref = F.pad(reference, (pad, pad, pad, pad))
    ref_norms = _squared_norms(ref)
    inside = F.pad((masks > 0.5).float(), (pad, pad, pad, pad)) > 0.5  # outside the frame: no object
    n, k = masks.shape[:2]
    best = [torch.full((n, k, *size), float("inf"), dtype=query.dtype, device=query.device) for _ in radii]
    for dy, dx in _displacements(big, dilation):
        sq = (q_norms + _shifted(ref_norms, pad, dy, dx, size)
              - 2 * (query * _shifted(ref, pad, dy, dx, size)).sum(dim=1)).clamp(min=0)  # (N, H, W)
        candidate = torch.where(_shifted(inside, pad, dy, dx, size), sq.unsqueeze(1), torch.full_like(best[0], float("inf")))
        reach = max(abs(dy), abs(dx)) // dilation
        for i, r in enumerate(radii):
            if reach <= r:
                best[i] = torch.minimum(best[i], candidate)
    return _finish(torch.stack(best, dim=1), bias if not isinstance(bias, torch.Tensor) or bias.dim() == 0
                   else bias.unsqueeze(1))

