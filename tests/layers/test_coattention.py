"""COSNet's gated co-attention: the constraints of the three W's, the softmax direction, hand-computed summaries."""
from __future__ import annotations

import math

import pytest
import torch

from selfvos.layers.coattention import CoAttention, co_attend

E = math.e


def randomised(layer: CoAttention, seed: int = 0) -> CoAttention:
    """Every parameter of ``layer`` moved away from its (identity-like) init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5)
    return layer


def test_symmetric_w_is_p_transpose_d_p_with_p_orthogonal():
    layer = randomised(CoAttention(16, "symmetric"))
    p = layer.projection.weight
    assert not torch.allclose(p, torch.eye(16), atol=1e-2)
    torch.testing.assert_close(p.t() @ p, torch.eye(16), atol=1e-5, rtol=0)
    w = layer.matrix()
    torch.testing.assert_close(w, w.t(), atol=1e-6, rtol=0)
    torch.testing.assert_close(w, p.t() @ torch.diag(layer.diagonal) @ p, atol=1e-6, rtol=0)
    # P stays orthogonal through training
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
    for _ in range(3):
        loss = layer(torch.randn(2, 16, 3, 4), torch.randn(2, 16, 4, 3)).square().sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    p = layer.projection.weight  # float32 rounding of the parametrisation: a few 1e-5 after the updates
    torch.testing.assert_close(p.t() @ p, torch.eye(16), atol=1e-4, rtol=0)


def test_channel_wise_equals_vanilla_with_a_diagonal_w():
    channel = randomised(CoAttention(8, "channel"), seed=1)
    vanilla = CoAttention(8, "vanilla")
    with torch.no_grad():
        vanilla.weight.copy_(torch.diag(channel.diagonal))
        vanilla.gate.load_state_dict(channel.gate.state_dict())
    w = channel.matrix()
    assert torch.equal(w, torch.diag(torch.diagonal(w)))  # W is diagonal
    g = torch.Generator().manual_seed(2)
    query, reference = torch.randn(3, 8, 5, 6, generator=g), torch.randn(3, 8, 4, 7, generator=g)
    torch.testing.assert_close(channel(query, reference), vanilla(query, reference))
    torch.testing.assert_close(channel.affinity(query.flatten(2), reference.flatten(2)),
                               vanilla.affinity(query.flatten(2), reference.flatten(2)))
    za, zb = channel.pair(query, reference)
    va, vb = vanilla.pair(query, reference)
    torch.testing.assert_close(za, va)
    torch.testing.assert_close(zb, vb)


@pytest.mark.parametrize("variant", ["vanilla", "symmetric", "channel"])
def test_affinity_is_vb_transpose_w_va(variant):
    layer = randomised(CoAttention(6, variant), seed=3)
    g = torch.Generator().manual_seed(4)
    va, vb = torch.randn(2, 6, 10, generator=g), torch.randn(2, 6, 7, generator=g)
    s = layer.affinity(va, vb)
    assert s.shape == (2, 7, 10)
    torch.testing.assert_close(s, vb.transpose(1, 2) @ layer.matrix() @ va, atol=1e-5, rtol=1e-5)


def test_softmax_normalises_each_column_over_the_other_frame():
    """With V_b = I (C = N_b), Z_a = V_b S^c = S^c: its columns (one per query cell) sum to 1; likewise Z_b = S^r."""
    g = torch.Generator().manual_seed(5)
    s = torch.randn(1, 4, 6, generator=g) * 3  # (N_b, N_a)
    za, _ = co_attend(torch.randn(1, 4, 6, generator=g), torch.eye(4)[None], s)
    torch.testing.assert_close(za, torch.softmax(s, dim=1))
    torch.testing.assert_close(za.sum(dim=1), torch.ones(1, 6))
    _, zb = co_attend(torch.eye(6)[None], torch.randn(1, 6, 4, generator=g), s)
    assert zb.shape == (1, 6, 4)
    torch.testing.assert_close(zb.sum(dim=1), torch.ones(1, 4))  # S^r: each row of S normalised
    torch.testing.assert_close(zb, torch.softmax(s, dim=2).transpose(1, 2))


def test_summaries_match_a_hand_computation():
    """C = 2, two cells per frame, W = I: S = V_b^T V_a = [[1, 1], [0, 2]]."""
    layer = CoAttention(2, "vanilla")
    with torch.no_grad():
        layer.weight.copy_(torch.eye(2))
        layer.gate.weight.copy_(torch.tensor([1.0, -1.0]).view(1, 2, 1, 1))
        layer.gate.bias.fill_(0.5)
    va = torch.tensor([[1.0, 1.0], [0.0, 1.0]])  # (C, N_a): columns are cells
    vb = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    query, reference = va.view(1, 2, 1, 2), vb.view(1, 2, 1, 2)
    # S^c column 0 = softmax([1, 0]), column 1 = softmax([1, 2]); Z_a = V_b S^c
    za = torch.tensor([[E / (E + 1), 1 / (1 + E)],
                       [2 / (E + 1), 2 * E / (1 + E)]])
    torch.testing.assert_close(layer.summary(query, reference).view(2, 2), za)
    gate = torch.sigmoid(za[0] - za[1] + 0.5)
    torch.testing.assert_close(layer(query, reference).view(2, 2), za * gate)
    # S^r column i = softmax(row i of S) = [1/2, 1/2], [1/(1+e^2), e^2/(1+e^2)]; Z_b = V_a S^r
    zb = torch.tensor([[1.0, 1.0], [0.5, E ** 2 / (1 + E ** 2)]])
    out_a, out_b = layer.pair(query, reference)
    torch.testing.assert_close(out_a.view(2, 2), za * gate)
    torch.testing.assert_close(out_b.view(2, 2), zb * torch.sigmoid(zb[0] - zb[1] + 0.5))


def test_gate_is_in_the_open_unit_interval():
    layer = randomised(CoAttention(8, "symmetric"), seed=6)
    z = torch.randn(2, 8, 5, 5, generator=torch.Generator().manual_seed(7)) * 3
    gate = layer.gate_map(z)
    assert gate.shape == (2, 1, 5, 5) and bool((gate > 0).all() and (gate < 1).all())
    torch.testing.assert_close(layer.gated(z), z * gate)


def test_invalid_variant():
    with pytest.raises(ValueError, match="variant"):
        CoAttention(4, "diagonal")
