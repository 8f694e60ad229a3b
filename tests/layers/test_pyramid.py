"""The pyramid dilated block (PDB's PDC, AGS's pyramid blocks) and the dilated ConvLSTM cell: branch layout,
the grid kept by every branch, and the dilation seen through an impulse response."""
from __future__ import annotations

import pytest
import torch

from selfvos.layers.conv_rnn import ConvLSTMCell
from selfvos.layers.pyramid import PyramidDilatedConv

pytestmark = pytest.mark.usefixtures("one_thread")


def test_pdc_keeps_the_input_and_the_grid():
    torch.manual_seed(0)
    block = PyramidDilatedConv(6, 4, (2, 4, 8, 16), 5, keep_input=True).eval()
    x = torch.randn(2, 6, 7, 11)  # smaller than the largest dilation: zero padding keeps the grid
    parts = block.branches(x)
    assert parts.shape == (2, 6 + 4 * 4, 7, 11)
    torch.testing.assert_close(parts[:, :6], x, rtol=0, atol=0)  # the input, concatenated unchanged
    assert block(x).shape == (2, 5, 7, 11) and block.fuse[0].in_channels == 22
    assert [(m[0].kernel_size, m[0].dilation, m[0].padding) for m in block.dilated] == [
        ((3, 3), (r, r), (r, r)) for r in (2, 4, 8, 16)]


def test_pyramid_block_with_centre_conv_and_pooling_branch():
    torch.manual_seed(0)
    block = PyramidDilatedConv(6, 4, (3, 6), 8, keep_input=False, pool=4).eval()
    x = torch.randn(1, 6, 9, 10)  # not a multiple of the pooling window (ceil mode: 3 x 3 cells)
    parts = block.branches(x)
    assert parts.shape == (1, 4 * 4, 9, 10) and block(x).shape == (1, 8, 9, 10)
    # the pooling branch sees only the 4x4 cell means: a change inside one cell that keeps its mean changes nothing
    y = x.clone()
    y[..., 0, 0] += 1.0
    y[..., 0, 1] -= 1.0
    torch.testing.assert_close(block.branches(y)[:, 12:], parts[:, 12:])
    with pytest.raises(ValueError, match="rates"):
        PyramidDilatedConv(6, 4, (), 8)


def test_dilated_cell_reads_neighbours_at_the_dilation():
    torch.manual_seed(0)
    cell = ConvLSTMCell(1, 2, kernel=3, dilation=2)
    assert cell.gates.dilation == (2, 2) and cell.gates.padding == (2, 2)
    x = torch.zeros(1, 1, 9, 9)
    impulse = x.clone()
    impulse[0, 0, 4, 4] = 1.0
    changed = (cell(impulse)[0] - cell(x)[0]).abs().sum(dim=(0, 1)) > 0  # (9, 9)
    expected = torch.zeros(9, 9, dtype=torch.bool)
    expected[2:7:2, 2:7:2] = True  # 4 + {-2, 0, 2} in y and x
    assert torch.equal(changed, expected)
