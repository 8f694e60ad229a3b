"""The RVOS decoder (hierarchical ConvLSTM, recurrent over objects and frames) and the zero-shot training targets
(soft-IoU Hungarian matching of slots to instances, stop targets); :mod:`selfvos.heads.rvos` builds the model on
them.

Decoder, one frame of B clips, ``count`` objects / slots i in order, ``L`` scales k coarse to fine::

    x(i, k)  = [f'_k | B(h_{i,k-1}) | S_{i,k} | h^{t-1}_{i,k}]        (k = 0: no B(h); one-shot only: S)
    (h_{i,k}, c_{i,k}) = ConvLSTM_k(x(i, k), (h_{i-1,k}, c_{i-1,k}))   (i = 0: zero state)

with ``f'_k`` the projected skip of the frame, ``B`` the bilinear upsampling to scale k, ``S_{i,k}`` object i's
previous mask area-resized to scale k and ``h^{t-1}`` the object's hidden map of the previous frame (zeros at the
first frame). The kernel ``W_k`` of ``ConvLSTM_k`` reads ``[x(i, k) | h_{i-1,k}]``; its gate pre-activations are
computed as the sum of the terms of the parts (:meth:`~selfvos.layers.conv_rnn.ConvLSTMCell.gate_terms`, the
convolution is linear), which gives the same gates with less work::

    gates(i, k) = (W_skip * f'_k + bias)                          once per frame, shared by every object
                + (W_[S|temporal] * [S_{i,k} | h^{t-1}_{i,k}])    once per frame, batched over the objects
                + (W_[above|state] * [B(h_{i,k-1}) | h_{i-1,k}])  per object (the spatial recurrence)

and terms of zero inputs (no previous object, no previous frame) are left out. Then, batched over the objects:
the foreground logit ``z_i`` = a 1x1 convolution of ``h_{i,L-1}`` and (zero-shot) the stop logit
``s_i = Linear([maxpool(h_{i,0}) | ... | maxpool(h_{i,L-1})])`` (global max-pooling, as RSIS).

The kernel's input channels keep the order ``[skip | above | mask | temporal | state]`` of the concatenated
input, so a checkpoint holds ``cells.k.gates`` as one convolution per scale.
"""
from __future__ import annotations

from itertools import accumulate
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from selfvos.layers import ConvLSTMCell

VOID = 255
HiddenMaps = List[torch.Tensor]  # per scale k: (B, count, D_k, h_k, w_k), the hidden maps of every object


class RVOSDecoder(nn.Module):
    """The hierarchical ConvLSTM decoder of one frame (see the module docstring).

    ``forward(skips, count, masks, temporal)``: skips coarse to fine, each (B, skip_dim, h_k, w_k); masks (B, count,
    H, W) previous masks (``mask_input`` only) or None; temporal: the previous frame's :data:`HiddenMaps` of the
    same ``count`` objects, or None (zeros). Returns the foreground logits (B, count, h_fine, w_fine), the stop
    logits (B, count) (None without a stop branch) and this frame's :data:`HiddenMaps`.
    """

    def __init__(self, skip_dim: int, hidden: Sequence[int], mask_input: bool, stop: bool) -> None:
        super().__init__()
        self.mask_input = mask_input
        cells, self.channels = [], []
        for k, dim in enumerate(hidden):
            above = hidden[k - 1] if k else 0
            # [start, stop) of each part in the kernel's input [skip | above | mask | temporal | state]
            edges = list(accumulate([0, skip_dim, above, int(mask_input), dim, dim]))
            self.channels.append(dict(zip(("skip", "above", "mask", "temporal", "state"), zip(edges, edges[1:]))))
            cells.append(ConvLSTMCell(edges[-2], dim, 3))
        self.cells = nn.ModuleList(cells)
        self.predict = nn.Conv2d(hidden[-1], 1, 1)
        self.stop = nn.Linear(sum(hidden), 1) if stop else None

    @torch.no_grad()
    def init_mask_prior(self, strength: float) -> None:
        """Start the one-shot decoder as "copy the previous mask" (``strength`` a > 0). At the finest scale, hidden
        channel 0 writes the mask S into its cell and forgets the previous object's: input gate and candidate
        pre-activations a S at the kernel centre, candidate bias -a/2, forget bias -a, output bias +a; so
        c = sigma(a) tanh(a/2) for S = 1 and sigma(0) tanh(-a/2) for S = 0, h = sigma(a) tanh(c). The prediction
        reads channel 0 only (weight 2a, the other channels 0) with the bias that puts the midpoint of the two h
        values at logit 0 (logits about +-4.7 for a = 4). The other gate weights keep their random initialisation and
        act as noise; everything is learnt from there."""
        if not self.mask_input or strength <= 0:
            return
        cell, dim = self.cells[-1], self.cells[-1].hidden
        weight, bias, centre = cell.gates.weight, cell.gates.bias, cell.gates.kernel_size[0] // 2
        mask = self.channels[-1]["mask"][0]
        i, f, o, g = 0, dim, 2 * dim, 3 * dim  # gate rows of hidden channel 0 ([i | f | o | g] blocks of D)
        weight[i, mask, centre, centre] = weight[g, mask, centre, centre] = strength
        bias[i], bias[f], bias[o], bias[g] = 0.0, -strength, strength, -strength / 2
        a = torch.tensor(float(strength))
        gate_open, half = torch.sigmoid(a), torch.tanh(a / 2)
        on = gate_open * torch.tanh(gate_open * half)  # h for S = 1
        off = gate_open * torch.tanh(-0.5 * half)  # h for S = 0
        self.predict.weight[0] = 0.0
        self.predict.weight[0, 0] = 2 * strength
        self.predict.bias[0] = -strength * float(on + off)

    def _object_terms(self, k: int, size: Tuple[int, int], masks: Optional[torch.Tensor],
                      temporal: Optional[HiddenMaps], count: int) -> Optional[Tuple[torch.Tensor, ...]]:
        """Per object (B, 4D_k, h_k, w_k): every object's mask + temporal term at scale k, computed in one
        convolution (None: both absent)."""
        parts, ranges = [], []
        if self.mask_input:
            resized = F.interpolate(masks, size=size, mode="area")  # (B, count, h, w)
            parts.append(resized.reshape(-1, 1, *size))
            ranges.append(self.channels[k]["mask"])
        if temporal is not None:
            parts.append(temporal[k].flatten(0, 1))
            ranges.append(self.channels[k]["temporal"])
        if not parts:
            return None
        cell = self.cells[k]
        terms = cell.gate_terms(torch.cat(parts, dim=1), cell.input_weight(ranges))
        return terms.reshape(-1, count, *terms.shape[1:]).unbind(1)  # one backward for all objects

    def _recurrent_weights(self, k: int) -> Dict[str, torch.Tensor]:
        """Scale k's kernels of the per-object parts: ``above``, ``state`` and ``both`` ([above | state])."""
        cell, channels = self.cells[k], self.channels[k]
        weights = {"state": cell.input_weight([channels["state"]])}
        if k:
            weights.update(above=cell.input_weight([channels["above"]]),
                           both=cell.input_weight([channels["above"], channels["state"]]))
        return weights

    def forward(self, skips: Sequence[torch.Tensor], count: int, masks: Optional[torch.Tensor] = None,
                temporal: Optional[HiddenMaps] = None
                ) -> Tuple[torch.Tensor, Optional[torch.Tensor], HiddenMaps]:
        if self.mask_input and masks is None:
            raise ValueError("this decoder reads the previous masks: pass masks (B, count, H, W)")
        sizes = [tuple(skip.shape[-2:]) for skip in skips]
        shared = [cell.gate_terms(skip, cell.input_weight([self.channels[k]["skip"]]), bias=True)
                  for k, (cell, skip) in enumerate(zip(self.cells, skips))]
        own = [self._object_terms(k, sizes[k], masks, temporal, count) for k in range(len(self.cells))]
        recurrent = [self._recurrent_weights(k) for k in range(len(self.cells))]
        states: List[Optional[Tuple[torch.Tensor, torch.Tensor]]] = [None] * len(self.cells)
        maps: List[List[torch.Tensor]] = [[] for _ in self.cells]
        for i in range(count):
            above: Optional[torch.Tensor] = None
            for k, cell in enumerate(self.cells):
                gates = shared[k] if own[k] is None else shared[k] + own[k][i]
                parts = {}
                if above is not None:
                    parts["above"] = F.interpolate(above, size=sizes[k], mode="bilinear", align_corners=False)
                if states[k] is not None:
                    parts["state"] = states[k][0]
                if parts:
                    weight = recurrent[k]["both" if len(parts) == 2 else next(iter(parts))]
                    gates = gates + cell.gate_terms(torch.cat(list(parts.values()), dim=1), weight)
                states[k] = cell.update(gates, None if states[k] is None else states[k][1])
                maps[k].append(states[k][0])
                above = states[k][0]
        hidden = [torch.stack(h, dim=1) for h in maps]
        b = hidden[-1].shape[0]
        logits = self.predict(hidden[-1].flatten(0, 1)).reshape(b, count, *sizes[-1])
        stop = None
        if self.stop is not None:
            stop = self.stop(torch.cat([h.amax(dim=(-2, -1)) for h in hidden], dim=2))[..., 0]
        return logits, stop, hidden


def soft_iou_matrix(probabilities: torch.Tensor, truth: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """probabilities (N, T, H, W) of N slots, truth (K, T, H, W) in {0, 1}, valid (T, H, W) -> (N, K) soft IoU over
    the clip: ``sum p y v / sum (p + y - p y) v``."""
    p = (probabilities * valid).flatten(1)
    y = (truth * valid).flatten(1).to(p.dtype)
    inter = p @ y.T
    union = p.sum(1, keepdim=True) + y.sum(1)[None] - inter
    return inter / union.clamp(min=1e-6)


def hungarian_match(soft_iou: torch.Tensor) -> torch.Tensor:
    """(N, K) soft IoU of N slots with K instances -> (K,) long: the slot assigned to each instance by
    ``linear_sum_assignment`` on the cost ``1 - soft_iou`` (-1 for an instance left without a slot, K > N)."""
    from scipy.optimize import linear_sum_assignment

    n, k = soft_iou.shape
    slots = torch.full((k,), -1, dtype=torch.long)
    if n and k:
        rows, cols = linear_sum_assignment((1.0 - soft_iou.detach().float()).cpu().numpy())
        slots[torch.as_tensor(cols, dtype=torch.long)] = torch.as_tensor(rows, dtype=torch.long)
    return slots


def match_slots(z: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor, first_slots: bool = True) -> torch.Tensor:
    """The Hungarian assignment of a clip batch (under no_grad): z (B, T, N, h, w) slot logits, masks (B, T, H, W)
    instance ids (255 void), valid (B, K) bool -> (B, K) long, the slot of each valid instance (-1: none). Per
    sample, ``hungarian_match`` on the clip's :func:`soft_iou_matrix` of ``sigmoid(z)`` bilinearly upsampled to
    (H, W) against the instance masks over the non-void pixels; ``first_slots``: only the first min(N, K_b) slots
    are candidates."""
    b, k, n = valid.shape[0], valid.shape[1], z.shape[2]
    assignment = torch.full((b, k), -1, dtype=torch.long)
    with torch.no_grad():
        for j in range(b):
            objects = torch.nonzero(valid[j]).flatten()
            candidates = min(n, len(objects)) if first_slots else n
            if not len(objects) or not candidates:
                continue
            truth = torch.stack([masks[j] == int(o) + 1 for o in objects])
            upsampled = F.interpolate(z[j, :, :candidates], size=tuple(masks.shape[-2:]), mode="bilinear",
                                      align_corners=False)
            iou = soft_iou_matrix(torch.sigmoid(upsampled.float()).transpose(0, 1), truth, (masks[j] != VOID).float())
            assignment[j, objects] = hungarian_match(iou)
    return assignment.to(z.device)


def stop_targets(num_objects: torch.Tensor, slots: int) -> torch.Tensor:
    """(B,) instance counts K_b -> (B, N) float stop targets: 1 iff slot i >= K_b (the paper's)."""
    return (torch.arange(slots, device=num_objects.device)[None] >= num_objects[:, None]).float()


__all__ = ["HiddenMaps", "RVOSDecoder", "hungarian_match", "match_slots", "soft_iou_matrix", "stop_targets"]
