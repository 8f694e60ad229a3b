"""The space-time memory read equals a hand-computed softmax read; soft aggregation is a distribution."""
from __future__ import annotations

import math

import torch

from selfvos.layers import memory_read, soft_aggregate


def reference_read(mk: torch.Tensor, mv: torch.Tensor, qk: torch.Tensor) -> torch.Tensor:
    """Loop over query cells: w_m = exp(k_m . q / sqrt(D)) / sum_m' exp(...), read = sum_m w_m v_m."""
    n, dk, t, h, w = mk.shape
    out = torch.zeros(n, mv.shape[1], qk.shape[2] * qk.shape[3], dtype=torch.float64)
    keys = mk.reshape(n, dk, -1).double()
    values = mv.reshape(n, mv.shape[1], -1).double()
    query = qk.reshape(n, dk, -1).double()
    for i in range(n):
        for q in range(query.shape[2]):
            scores = [float(keys[i, :, m] @ query[i, :, q]) / math.sqrt(dk) for m in range(keys.shape[2])]
            top = max(scores)
            weights = torch.tensor([math.exp(s - top) for s in scores], dtype=torch.float64)
            weights /= weights.sum()
            out[i, :, q] = values[i] @ weights
    return out.reshape(n, mv.shape[1], *qk.shape[-2:])


def test_memory_read_equals_hand_computed_softmax():
    g = torch.Generator().manual_seed(0)
    mk, mv = torch.randn(2, 4, 3, 3, 5, generator=g), torch.randn(2, 6, 3, 3, 5, generator=g)
    qk = torch.randn(2, 4, 3, 5, generator=g)
    expected = reference_read(mk, mv, qk).float()
    torch.testing.assert_close(memory_read(mk, mv, qk), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(memory_read(mk, mv, qk, chunk=4), expected, rtol=1e-5, atol=1e-5)  # chunked


def test_invalid_memory_frames_get_no_weight():
    g = torch.Generator().manual_seed(1)
    mk, mv, qk = torch.randn(1, 4, 3, 2, 2, generator=g), torch.randn(1, 5, 3, 2, 2, generator=g), torch.randn(1, 4, 2, 2, generator=g)
    valid = torch.tensor([[True, False, True]])
    kept = memory_read(mk[:, :, [0, 2]], mv[:, :, [0, 2]], qk)
    torch.testing.assert_close(memory_read(mk, mv, qk, memory_valid=valid), kept)


def test_soft_aggregation_formula_and_padding():
    p = torch.tensor([0.9, 0.2, 0.7]).view(1, 3, 1, 1)
    logits = soft_aggregate(torch.logit(p), valid=torch.tensor([[True, True, False]]))
    expected = torch.tensor([0.1 * 0.8, 0.9, 0.2, 0.0])  # background = prod (1 - p_k) over real objects
    torch.testing.assert_close(torch.sigmoid(logits).flatten(), expected, rtol=1e-5, atol=1e-7)
    assert int(torch.softmax(logits, dim=1).argmax()) == 1


def test_soft_aggregation_keeps_gradients_of_confident_mistakes():
    z = torch.tensor([-40.0, 35.0]).view(1, 2, 1, 1).requires_grad_()  # p ~ 4e-18 and ~1 - 6e-16
    loss = torch.nn.functional.cross_entropy(soft_aggregate(z), torch.tensor([[[1]]]))  # truth: object 1
    loss.backward()
    assert torch.isfinite(loss) and z.grad[0, 0, 0, 0] < 0 and z.grad[0, 1, 0, 0] > 0
