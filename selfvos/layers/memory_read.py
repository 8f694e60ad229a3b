"""Space-time memory read (STM, Oh et al. ICCV 2019) and soft aggregation of per-object probabilities.

Memory read: every query cell attends to EVERY memory cell of every memory frame,

    w[m, q] = softmax_m( k_M[m] . k_Q[q] / sqrt(D_k) )          (softmax over all T*h*w memory cells)
    read[:, q] = sum_m w[m, q] v_M[:, m]

and the read values are concatenated with the query's own values. Soft aggregation turns K per-object
foreground probabilities into K+1 logits whose softmax is a proper distribution over background + objects.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class KeyValue(nn.Module):
    """Key and value embeddings of a feature map: two 3x3 convolutions, (N, C, h, w) -> (N, Dk, h, w), (N, Dv, h, w)."""

    def __init__(self, in_channels: int, key_dim: int, value_dim: int) -> None:
        super().__init__()
        self.key = nn.Conv2d(in_channels, key_dim, 3, padding=1)
        self.value = nn.Conv2d(in_channels, value_dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.key(x), self.value(x)


def memory_read(memory_keys: torch.Tensor, memory_values: torch.Tensor, query_key: torch.Tensor,
                memory_valid: Optional[torch.Tensor] = None, chunk: int = 4096) -> torch.Tensor:
    """Read the memory for every query cell.

    Args:
        memory_keys: (N, Dk, T, h, w) keys of T memory frames.
        memory_values: (N, Dv, T, h, w).
        query_key: (N, Dk, h', w').
        memory_valid: optional (N, T) bool; invalid memory frames get no attention weight.
        chunk: query cells per affinity block (bounds the (T*h*w) x chunk affinity in memory).
    Returns:
        (N, Dv, h', w') read values.
    """
    n, dk, t, h, w = memory_keys.shape
    dv = memory_values.shape[1]
    keys = memory_keys.reshape(n, dk, t * h * w).transpose(1, 2)  # (N, M, Dk)
    values = memory_values.reshape(n, dv, t * h * w)  # (N, Dv, M)
    query = query_key.flatten(2)  # (N, Dk, Q)
    bias = None
    if memory_valid is not None:
        invalid = ~memory_valid.bool()[:, :, None].expand(n, t, h * w).reshape(n, t * h * w, 1)
        bias = torch.zeros(invalid.shape, dtype=keys.dtype, device=keys.device).masked_fill(invalid, float("-inf"))
    scale = 1.0 / math.sqrt(dk)
    out = []
    for start in range(0, query.shape[-1], chunk):
        logits = torch.bmm(keys, query[:, :, start:start + chunk]) * scale  # (N, M, q)
        if bias is not None:
            logits = logits + bias
        out.append(torch.bmm(values, torch.softmax(logits, dim=1)))  # (N, Dv, q)
    return torch.cat(out, dim=-1).reshape(n, dv, *query_key.shape[-2:])


def soft_aggregate(object_logits: torch.Tensor, valid: Optional[torch.Tensor] = None,
                   eps: float = 1e-7) -> torch.Tensor:
    """Per-object foreground logits -> logits over background + objects (STM soft aggregation).

    Args:
        object_logits: (B, K, H, W) logit ``z_k`` of each object's foreground probability ``p_k = sigmoid(z_k)``,
            computed independently per object.
        valid: optional (B, K) bool; padded objects get probability 0 (logit -1e4, out of the background).
    Returns:
        (B, K+1, H, W) logits ``log(p / (1 - p))`` of ``p = [prod_k (1 - p_k), p_1, ..., p_K]``; channel 0 is
        the background. Computed in log space (``log p_0 = sum_k log sigmoid(-z_k)``), so every pixel keeps a
        gradient however confident the prediction; only the background's ``1 - p_0`` is floored at ``eps``.
        (STM clamps every ``p`` to ``[eps, 1 - eps]`` instead, which stops the gradient of confident mistakes.)
    """
    z = object_logits.float()
    if valid is not None:
        keep = valid[:, :, None, None].to(torch.bool)
        z = torch.where(keep, z, torch.full_like(z, -1e4))
    log_background = F.logsigmoid(-z).sum(dim=1, keepdim=True)  # log prod_k (1 - p_k)
    log_rest = torch.log(-torch.expm1(log_background.clamp(max=math.log1p(-eps))))  # log (1 - p_0)
    return torch.cat([log_background - log_rest, z], dim=1)


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (N, C, h, w) to ``size`` (no-op when equal)."""
    return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(x, size=size, mode="bilinear", align_corners=False)
