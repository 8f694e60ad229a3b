"""Gated co-attention of COSNet (Lu et al., CVPR 2019): what a query frame learns from a reference frame.

Features of two frames, ``V_a`` (query) and ``V_b`` (reference), are (C, N) matrices (C channels, N = h * w
cells; the batch dimension is left out of the formulas). With a learned C x C matrix ``W``:

- affinity ``S = V_b^T W V_a`` (N_b, N_a): ``S_ij`` = weighted similarity of cell i of b and cell j of a;
- attention ``S^c = softmax(S)`` over each column (over the reference cells i; every column sums to 1) and
  ``S^r = softmax(S^T)`` over each column of ``S^T`` (i.e. over the rows of ``S``), both on the raw ``S``;
- summaries ``Z_a = V_b S^c`` (C, N_a): column j of ``Z_a`` is the average of the columns of ``V_b`` weighted
  by column j of ``S^c``; symmetrically ``Z_b = V_a S^r`` (C, N_b);
- gate ``f_g(Z) = sigmoid(w_f Z + b_f)`` (1, N) in (0, 1): a 1x1 convolution to one channel, shared by a and b;
  the gated summary is ``Z * f_g(Z)`` (broadcast over channels).

The three forms of ``W`` (``variant``):

- ``"vanilla"``: ``W`` a full learned C x C matrix (paper Eq. 3);
- ``"symmetric"``: ``W = P^T D P`` with ``P`` orthogonal (``torch.nn.utils.parametrizations.orthogonal``: P is
  the matrix exponential of a learned skew-symmetric matrix times a fixed orthogonal base, orthogonal to float
  precision throughout training) and ``D`` diagonal, so ``S = (P V_b)^T D (P V_a)`` (Eq. 4);
- ``"channel"``: ``W = diag(w)`` diagonal, ``S = V_b^T diag(w) V_a`` (Eq. 5).

Initialisation: every variant starts at ``W = I / sqrt(C)`` (S = the scaled dot product, attention neither flat
nor one-hot at the start; the released code uses ``nn.Linear``'s default init), ``P`` a random orthogonal matrix.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn.utils.parametrizations import orthogonal

VARIANTS = ("vanilla", "symmetric", "channel")


def co_attend(query: torch.Tensor, reference: torch.Tensor, affinity: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Attention summaries of both frames from one affinity.

    query ``V_a`` (B, C, N_a), reference ``V_b`` (B, C, N_b), affinity ``S`` (B, N_b, N_a) ->
    ``Z_a = V_b softmax(S, over dim N_b)`` (B, C, N_a), ``Z_b = V_a softmax(S^T, over dim N_a)`` (B, C, N_b).
    """
    s_c = torch.softmax(affinity.transpose(1, 2), dim=-1).transpose(1, 2)  # softmax over dim N_b: columns sum to 1
    s_r = torch.softmax(affinity, dim=-1).transpose(1, 2)  # (N_a, N_b): softmax over the rows of S
    return torch.bmm(reference, s_c), torch.bmm(query, s_r)


class CoAttention(nn.Module):
    """Gated co-attention over C-channel maps (see the module docstring).

    ``forward(query (B, C, h, w), reference (B, C, h', w'))`` -> the gated summary ``Z_a * f_g(Z_a)`` (B, C, h, w)
    of the query. ``pair(V_a, V_b)`` gives both gated summaries of a pair from one affinity, as in training.
    """

    def __init__(self, channels: int, variant: str = "symmetric") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"co-attention variant must be one of {VARIANTS}, got {variant!r}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.channels, self.variant = channels, variant
        scale = 1.0 / math.sqrt(channels)
        if variant == "vanilla":
            self.weight = nn.Parameter(torch.eye(channels) * scale)
        elif variant == "symmetric":
            self.projection = orthogonal(nn.Linear(channels, channels, bias=False))  # P
            self.diagonal = nn.Parameter(torch.full((channels,), scale))  # D
        else:
            self.diagonal = nn.Parameter(torch.full((channels,), scale))  # w of diag(w)
        self.gate = nn.Conv2d(channels, 1, 1)  # w_f, b_f

    def matrix(self) -> torch.Tensor:
        """W (C, C): the full matrix, ``P^T diag(D) P`` or ``diag(w)``."""
        if self.variant == "vanilla":
            return self.weight
        if self.variant == "symmetric":
            p = self.projection.weight
            return p.t() @ (self.diagonal[:, None] * p)
        return torch.diag(self.diagonal)

    def transform(self, query: torch.Tensor) -> torch.Tensor:
        """``W V_a``: (B, C, N) -> (B, C, N); the channel-wise variant scales channels without forming diag(w)."""
        if self.variant == "channel":
            return self.diagonal[None, :, None] * query
        return torch.einsum("cd,bdn->bcn", self.matrix(), query)

    def affinity(self, query: torch.Tensor, reference: torch.Tensor, transformed: bool = False) -> torch.Tensor:
        """``S = V_b^T W V_a`` (B, N_b, N_a) from query (B, C, N_a) and reference (B, C, N_b); with
        ``transformed=True`` the query is already ``W V_a`` (computed once per frame by the caller)."""
        wq = query if transformed else self.transform(query)
        return torch.bmm(reference.transpose(1, 2), wq)

    def gated(self, summary: torch.Tensor) -> torch.Tensor:
        """``Z * f_g(Z)``: (B, C, h, w) -> (B, C, h, w)."""
        return summary * self.gate_map(summary)

    def gate_map(self, summary: torch.Tensor) -> torch.Tensor:
        """``f_g(Z) = sigmoid(w_f Z + b_f)``: (B, C, h, w) -> (B, 1, h, w) in (0, 1)."""
        return torch.sigmoid(self.gate(summary))

    def summary(self, query: torch.Tensor, reference: torch.Tensor, transformed_query: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Ungated ``Z_a = V_b softmax_col(V_b^T W V_a)``: query (B, C, h, w), reference (B, C, h', w') ->
        (B, C, h, w). ``transformed_query``: ``W V_a`` (B, C, h * w) when the caller has it already."""
        b, c, h, w = query.shape
        ref = reference.flatten(2)
        wq = self.transform(query.flatten(2)) if transformed_query is None else transformed_query
        # S^T (B, N_a, N_b) is formed directly so that the softmax runs over its contiguous last dimension
        # (a softmax over dim 1 of S is a strided reduction, several times slower on CPU)
        s_c_t = torch.softmax(torch.bmm(wq.transpose(1, 2), ref), dim=-1)
        return torch.bmm(ref, s_c_t.transpose(1, 2)).view(b, c, h, w)

    def forward(self, query: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return self.gated(self.summary(query, reference))

    def pair(self, frame_a: torch.Tensor, frame_b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Both gated summaries of a training pair from one ``S``: (B, C, h, w) x 2 -> (Z_a, Z_b) gated."""
        va, vb = frame_a.flatten(2), frame_b.flatten(2)
        za, zb = co_attend(va, vb, self.affinity(va, vb))
        return self.gated(za.view_as(frame_a)), self.gated(zb.view_as(frame_b))
