"""Convolutional recurrences shared by the zero-shot heads (LVO's ConvGRU visual memory, PDB's and AGS's ConvLSTMs).

Cells take one time step, maps (N, C_in, H, W), and hold (N, D, H, W) states; convolutions keep the grid (odd
``kernel``, padding ``dilation * (kernel // 2)``; ``dilation`` > 1 is PDB's and AGS's dilated ConvLSTM).
:func:`run_sequence` unrolls a cell over (N, T, C_in, H, W) in either direction and returns (N, T, D, H, W)
hidden maps; :class:`BidirectionalConvRNN` concatenates a forward and a backward pass (LVO shares one cell
between the two; PDB / AGS give each direction its own), and with ``offline=False`` runs the forward direction
only, so frame t's output never depends on frames after t.

Equations (``*`` convolution, ``o`` element-wise product, ``[a, b]`` channel concatenation):

- ConvGRU: ``z = sigma(W_z * [x, h])``, ``r = sigma(W_r * [x, h])``, ``c = tanh(W_c * [x, r o h])``,
  ``h' = (1 - z) o h + z o c``;
- ConvLSTM: ``i, f, o, g = split(W * [x, h])``, ``c' = sigma(f) o c + sigma(i) o tanh(g)``,
  ``h' = sigma(o) o tanh(c')``.

The gate convolution is linear in its input, so ``W * [a, b] + bias = W_a * a + W_b * b + bias`` (``W_a`` the
kernel's input channels of part ``a``): :meth:`ConvLSTMCell.gate_terms` computes one part's term, so a caller can
compute a part shared by several cell calls once, batch the parts known in advance, and leave out a part that
is zero (a zero state); :meth:`ConvLSTMCell.update` applies the LSTM equations to the summed gates.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

State = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


class ConvGRUCell(nn.Module):
    """One ConvGRU step: x (N, C_in, H, W), h (N, D, H, W) or None (zeros) -> h' (N, D, H, W)."""

    def __init__(self, in_channels: int, hidden: int, kernel: int = 3) -> None:
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"kernel must be odd (same padding), got {kernel}")
        self.hidden = hidden
        self.gates = nn.Conv2d(in_channels + hidden, 2 * hidden, kernel, padding=kernel // 2)
        self.candidate = nn.Conv2d(in_channels + hidden, hidden, kernel, padding=kernel // 2)

    def initial(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], self.hidden, *x.shape[-2:])

    def forward(self, x: torch.Tensor, state: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.initial(x) if state is None else state
        z, r = torch.sigmoid(self.gates(torch.cat([x, h], 1))).chunk(2, dim=1)
        c = torch.tanh(self.candidate(torch.cat([x, r * h], 1)))
        return (1 - z) * h + z * c

    @staticmethod
    def output(state: torch.Tensor) -> torch.Tensor:
        return state


class ConvLSTMCell(nn.Module):
    """One ConvLSTM step: x (N, C_in, H, W), state (h, c) each (N, D, H, W) or None (zeros) -> (h', c')."""

    def __init__(self, in_channels: int, hidden: int, kernel: int = 3, dilation: int = 1) -> None:
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"kernel must be odd (same padding), got {kernel}")
        if dilation < 1:
            raise ValueError(f"dilation must be >= 1, got {dilation}")
        self.hidden, self.dilation = hidden, dilation
        self.gates = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel, padding=dilation * (kernel // 2),
                               dilation=dilation)

    def initial(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        zeros = x.new_zeros(x.shape[0], self.hidden, *x.shape[-2:])
        return zeros, zeros

    def forward(self, x: torch.Tensor, state: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        h, c = self.initial(x) if state is None else state
        return self.update(self.gates(torch.cat([x, h], 1)), c)

    def input_weight(self, ranges: Sequence[Tuple[int, int]]) -> torch.Tensor:
        """The gate kernel's input channels ``[start, stop)`` of each range (channels of ``[x, h]``), concatenated in
        order: (4D, C', k, k)."""
        weight = self.gates.weight
        parts = [weight[:, start:stop] for start, stop in ranges]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def gate_terms(self, part: torch.Tensor, weight: torch.Tensor, bias: bool = False) -> torch.Tensor:
        """One input part's term of the gate pre-activations: part (N, C', H, W), ``weight`` from
        :meth:`input_weight` -> ``weight * part`` (+ the gate bias if ``bias``) (N, 4D, H, W). The gates of
        ``[x, h]`` are the sum of the terms of its parts with the bias added once."""
        conv = self.gates
        return F.conv2d(part, weight, conv.bias if bias else None, padding=conv.padding, dilation=conv.dilation)

    @staticmethod
    def update(gates: torch.Tensor, c: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """The LSTM equations on the gate pre-activations (N, 4D, H, W) and the cell state c (N, D, H, W), None for
        zeros (``c' = sigma(i) o tanh(g)``) -> (h', c')."""
        i, f, o, g = gates.chunk(4, dim=1)
        c = torch.sigmoid(i) * torch.tanh(g) if c is None else torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    @staticmethod
    def output(state: Tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return state[0]


Cell = Union[ConvGRUCell, ConvLSTMCell]


def run_sequence(cell: Cell, x: torch.Tensor, reverse: bool = False, state: Optional[State] = None) -> torch.Tensor:
    """Unroll ``cell`` over x (N, T, C_in, H, W) from frame 0 (``reverse``: from frame T-1) -> (N, T, D, H, W),
    output t being the hidden map after frame t was read."""
    order = range(x.shape[1] - 1, -1, -1) if reverse else range(x.shape[1])
    outputs = [None] * x.shape[1]
    for t in order:
        state = cell(x[:, t], state)
        outputs[t] = cell.output(state)
    return torch.stack(outputs, dim=1)


class BidirectionalConvRNN(nn.Module):
    """Forward + backward recurrence, concatenated: (N, T, C_in, H, W) -> (N, T, 2D, H, W) offline.

    ``shared=True`` runs one cell both ways (LVO); otherwise each direction has its own cell (PDB, AGS).
    ``offline=False`` at call time runs the forward cell only and fills the backward half with zeros (the layers
    after it keep their shapes); output t then depends on frames 0..t only.
    """

    def __init__(self, in_channels: int, hidden: int, kernel: int = 3, cell: str = "gru", shared: bool = False) -> None:
        super().__init__()
        cells = {"gru": ConvGRUCell, "lstm": ConvLSTMCell}
        if cell not in cells:
            raise ValueError(f"cell must be one of {sorted(cells)}, got {cell!r}")
        self.forward_cell = cells[cell](in_channels, hidden, kernel)
        self.backward_cell = self.forward_cell if shared else cells[cell](in_channels, hidden, kernel)
        self.hidden = hidden

    def forward(self, x: torch.Tensor, offline: bool = True) -> torch.Tensor:
        ahead = run_sequence(self.forward_cell, x)
        if not offline:
            return torch.cat([ahead, torch.zeros_like(ahead)], dim=2)
        return torch.cat([ahead, run_sequence(self.backward_cell, x, reverse=True)], dim=2)


__all__ = ["BidirectionalConvRNN", "ConvGRUCell", "ConvLSTMCell", "run_sequence"]
