"""Video granularity: a key/value memory of K frames from the whole video, read by each query frame.

Keys ``k = conv1x1_key(phi)`` (C_k channels) are shared by query and memory; values ``v = conv1x1_val(phi)``
(C_v). For a query cell q the read is ONE softmax over every memory cell m of all K frames:

    w_qm = softmax_m(<k_q, k_m> / sqrt(C_k)),    r_q = sum_m w_qm v_m

(temperature sqrt(C_k) as in scaled dot-product attention / STM; the released MuG code applies softmax
twice, which flattens the attention to near-uniform). The read-out is concatenated with the query
features, fused by a 1x1 conv + ReLU back to C channels and decoded by the shared mask head rho; the
objective is BCE against the query frame's pseudo-mask (masked by ``mask_valid``). Every reference is a
memory frame: ``ref_valid`` says whether a reference has a pseudo-mask, which this read does not use.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from selfvos.pretrain.frame import masked_soft_bce

if TYPE_CHECKING:
    from selfvos.pretrain.model import MuGModel


class MemoryReader(nn.Module):
    """Key/value attention read of a frame memory, fused with the query features."""

    def __init__(self, channels: int, key_dim: int = 64, value_dim: int = 256) -> None:
        super().__init__()
        self.key = nn.Conv2d(channels, key_dim, kernel_size=1)
        self.value = nn.Conv2d(channels, value_dim, kernel_size=1)
        self.fuse = nn.Sequential(nn.Conv2d(channels + value_dim, channels, kernel_size=1), nn.ReLU(inplace=True))
        self.scale = 1.0 / math.sqrt(key_dim)

    def attention(self, query: torch.Tensor, memory: torch.Tensor,
                  memory_valid: torch.Tensor | None = None) -> torch.Tensor:
        """Attention weights: query (N, C, H, W), memory (N, K, C, h, w) -> (N, H*W, K*h*w), rows sum to 1.

        Invalid memory frames (``memory_valid`` (N, K) False) get zero weight; a row with no valid
        frame is all zeros (read-out 0).
        """
        n, k = memory.shape[:2]
        q = self.key(query).flatten(2).transpose(1, 2)  # (N, HW, Ck)
        mk = self.key(memory.flatten(0, 1))  # (N*K, Ck, h, w)
        mk = mk.reshape(n, k, mk.shape[1], -1).permute(0, 2, 1, 3).flatten(2)  # (N, Ck, K*h*w)
        logits = (q @ mk) * self.scale
        if memory_valid is not None:
            cells = memory.shape[-2] * memory.shape[-1]
            keep = memory_valid.to(torch.bool).repeat_interleave(cells, dim=1)[:, None, :]
            logits = logits.masked_fill(~keep, float("-inf"))
            weights = torch.softmax(logits, dim=-1)
            return torch.nan_to_num(weights, nan=0.0)
        return torch.softmax(logits, dim=-1)

    def forward(self, query: torch.Tensor, memory: torch.Tensor, memory_valid: torch.Tensor | None = None) -> torch.Tensor:
        """query (N, C, H, W), memory (N, K, C, h, w) -> fused features (N, C, H, W)."""
        n, k = memory.shape[:2]
        weights = self.attention(query, memory, memory_valid)  # (N, HW, K*h*w)
        mv = self.value(memory.flatten(0, 1))
        mv = mv.reshape(n, k, mv.shape[1], -1).permute(0, 2, 1, 3).flatten(2)  # (N, Cv, K*h*w)
        readout = (mv @ weights.transpose(1, 2)).reshape(n, -1, *query.shape[-2:])
        return self.fuse(torch.cat([query, readout], dim=1))


class VideoMemory(nn.Module):
    """BCE of rho(fuse(query, read(memory of refs))) against each query frame's pseudo-mask."""

    def forward(self, model: "MuGModel", frame_features: torch.Tensor, ref_features: torch.Tensor,
                pseudo_masks: torch.Tensor, mask_valid: torch.Tensor) -> torch.Tensor:
        """frame_features (B, T, C, h, w) queries; ref_features (B, R, C, h', w') memory;
        pseudo_masks (B, T, 1, H, W); mask_valid (B, T) -> scalar."""
        b, t = frame_features.shape[:2]
        queries = frame_features.flatten(0, 1)  # (B*T, C, h, w)
        memory = ref_features.repeat_interleave(t, dim=0)  # (B*T, R, C, h', w'): each query reads its video
        logits = model.read_memory(queries, memory)
        return masked_soft_bce(logits.reshape(b, t, *logits.shape[1:]), pseudo_masks, mask_valid)
