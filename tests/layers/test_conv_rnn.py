"""ConvGRU / ConvLSTM against their equations, and the causality of the bidirectional recurrence."""
from __future__ import annotations

import pytest
import torch

from selfvos.layers.conv_rnn import BidirectionalConvRNN, ConvGRUCell, ConvLSTMCell, run_sequence


def test_conv_gru_cell_matches_equations():
    torch.manual_seed(0)
    cell = ConvGRUCell(3, 4, kernel=1)
    x, h = torch.randn(2, 3, 5, 6), torch.randn(2, 4, 5, 6)
    wz, wr = cell.gates.weight[:4, :, 0, 0], cell.gates.weight[4:, :, 0, 0]
    bz, br = cell.gates.bias[:4], cell.gates.bias[4:]
    xh = torch.cat([x, h], 1)
    z = torch.sigmoid(torch.einsum("oc,nchw->nohw", wz, xh) + bz.view(1, -1, 1, 1))
    r = torch.sigmoid(torch.einsum("oc,nchw->nohw", wr, xh) + br.view(1, -1, 1, 1))
    c = torch.tanh(torch.einsum("oc,nchw->nohw", cell.candidate.weight[:, :, 0, 0], torch.cat([x, r * h], 1))
                   + cell.candidate.bias.view(1, -1, 1, 1))
    torch.testing.assert_close(cell(x, h), (1 - z) * h + z * c)
    torch.testing.assert_close(cell(x), cell(x, torch.zeros_like(h)))


def test_conv_lstm_cell_matches_equations():
    torch.manual_seed(0)
    cell = ConvLSTMCell(3, 4, kernel=1)
    x, h, c = torch.randn(2, 3, 5, 6), torch.randn(2, 4, 5, 6), torch.randn(2, 4, 5, 6)
    gates = torch.einsum("oc,nchw->nohw", cell.gates.weight[:, :, 0, 0], torch.cat([x, h], 1)) \
        + cell.gates.bias.view(1, -1, 1, 1)
    i, f, o, g = gates.chunk(4, 1)
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_next, c_out = cell(x, (h, c))
    torch.testing.assert_close(c_out, c_next)
    torch.testing.assert_close(h_next, torch.sigmoid(o) * torch.tanh(c_next))


def test_even_kernel_and_unknown_cell_are_errors():
    with pytest.raises(ValueError, match="odd"):
        ConvGRUCell(3, 4, kernel=2)
    with pytest.raises(ValueError, match="cell"):
        BidirectionalConvRNN(3, 4, cell="rnn")


def test_run_sequence_reverse_reads_the_future_first():
    torch.manual_seed(0)
    cell = ConvGRUCell(2, 3)
    x = torch.randn(1, 4, 2, 5, 5)
    out = run_sequence(cell, x, reverse=True)
    torch.testing.assert_close(out[:, 3], cell(x[:, 3]))
    torch.testing.assert_close(out[:, 2], cell(x[:, 2], cell(x[:, 3])))


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("shared", [True, False])
def test_future_frames_reach_the_past_only_offline(kind, shared):
    torch.manual_seed(0)
    rnn = BidirectionalConvRNN(2, 3, cell=kind, shared=shared)
    assert (rnn.forward_cell is rnn.backward_cell) == shared
    x = torch.randn(1, 5, 2, 6, 6)
    changed = x.clone()
    changed[:, 4] += 1.0  # only the last frame differs
    for offline in (True, False):
        a, b = rnn(x, offline=offline), rnn(changed, offline=offline)
        assert a.shape == (1, 5, 6, 6, 6)
        past_moves = not torch.allclose(a[:, :4], b[:, :4])
        assert past_moves == offline
    assert torch.count_nonzero(rnn(x, offline=False)[:, :, 3:]) == 0
