"""The shared matching blocks against dense references computed from the full pairwise map."""
from __future__ import annotations

import math

import pytest
import torch

from selfvos.layers.matching import embedding_distance, global_matching, local_correlation, local_matching


def window(radius, dilation):
    return [(dy * dilation, dx * dilation) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]


def dense_window(query, reference, radius, dilation, squared):
    """Every pairwise value from the full (HW x HW) map, then the window entries picked out by index."""
    n, c, h, w = query.shape
    q, r = query.flatten(2).transpose(1, 2), reference.flatten(2).transpose(1, 2)
    full = torch.cdist(q, r) ** 2 if squared else torch.bmm(q, r.transpose(1, 2))
    out = torch.full((n, (2 * radius + 1) ** 2, h, w), math.inf if squared else 0.0, dtype=query.dtype)
    for y in range(h):
        for x in range(w):
            for i, (dy, dx) in enumerate(window(radius, dilation)):
                if 0 <= y + dy < h and 0 <= x + dx < w:
                    out[:, i, y, x] = full[:, y * w + x, (y + dy) * w + x + dx]
    return out


@pytest.mark.parametrize("radius,dilation", [(0, 1), (2, 1), (2, 2), (3, 3)])
def test_local_correlation_equals_dense_window(radius, dilation):
    g = torch.Generator().manual_seed(0)
    q, r = torch.randn(2, 5, 7, 9, generator=g), torch.randn(2, 5, 7, 9, generator=g)
    torch.testing.assert_close(local_correlation(q, r, radius, dilation),
                               dense_window(q, r, radius, dilation, squared=False), rtol=1e-5, atol=1e-5)
    cosine = local_correlation(q, r, radius, dilation, normalize=True)
    assert cosine.abs().max() <= 1 + 1e-6


def test_embedding_distance_formula():
    sq = torch.tensor([0.0, 0.5, 3.0, 40.0])
    torch.testing.assert_close(embedding_distance(sq), 1 - 2 / (1 + torch.exp(sq)))
    torch.testing.assert_close(embedding_distance(sq, 0.7), 1 - 2 / (1 + torch.exp(sq + 0.7)))


def test_global_matching_is_the_nearest_object_pixel():
    g = torch.Generator().manual_seed(1)
    q, r = torch.randn(1, 4, 6, 5, generator=g), torch.randn(1, 4, 8, 7, generator=g)
    masks = torch.zeros(1, 3, 8, 7, dtype=torch.bool)
    masks[0, 0, 2:5, 1:4] = True
    masks[0, 1, 6:, 5:] = True  # object 2 (index 2) has no pixel
    out = global_matching(q, r, masks, bias=0.3, chunk=7)  # chunking must not matter
    sq = torch.cdist(q.flatten(2).transpose(1, 2), r.flatten(2).transpose(1, 2))[0] ** 2  # (Q, M)
    for k in range(2):
        nearest = sq[:, masks[0, k].flatten()].min(dim=1).values
        torch.testing.assert_close(out[0, k].flatten(), embedding_distance(nearest, 0.3), rtol=1e-4, atol=1e-5)
    assert torch.all(out[0, 2] == 1)


def test_atrous_global_matching_with_stride_one_is_plain_matching():
    g = torch.Generator().manual_seed(2)
    q, r = torch.randn(1, 4, 6, 6, generator=g), torch.randn(1, 4, 6, 6, generator=g)
    masks = torch.rand(1, 2, 6, 6, generator=g) > 0.5
    torch.testing.assert_close(global_matching(q, r, masks, stride=1), global_matching(q, r, masks))
    strided = global_matching(q, r, masks, stride=2)
    sub = global_matching(q, r[..., ::2, ::2].repeat_interleave(2, -1).repeat_interleave(2, -2), masks[..., ::2, ::2]
                          .repeat_interleave(2, -1).repeat_interleave(2, -2))
    torch.testing.assert_close(strided, sub)  # only every 2nd reference pixel takes part


@pytest.mark.parametrize("dilation", [1, 2])
def test_local_matching_equals_dense_window_minimum(dilation):
    g = torch.Generator().manual_seed(3)
    q, r = torch.randn(2, 3, 9, 8, generator=g), torch.randn(2, 3, 9, 8, generator=g)
    masks = torch.rand(2, 2, 9, 8, generator=g) > 0.7
    radii = (1, 3)
    out = local_matching(q, r, masks, radii=radii, dilation=dilation, bias=0.2)
    assert out.shape == (2, 2, 2, 9, 8)
    for i, radius in enumerate(radii):
        sq = dense_window(q, r, radius, dilation, squared=True)  # (N, W, H, W)
        for k in range(2):
            m = torch.zeros_like(sq, dtype=torch.bool)
            for j, (dy, dx) in enumerate(window(radius, dilation)):
                for y in range(9):
                    for x in range(8):
                        if 0 <= y + dy < 9 and 0 <= x + dx < 8:
                            m[:, j, y, x] = masks[:, k, y + dy, x + dx]
            nearest = torch.where(m, sq, torch.full_like(sq, math.inf)).min(dim=1).values
            expected = torch.where(torch.isfinite(nearest), embedding_distance(nearest.nan_to_num(posinf=0), 0.2),
                                   torch.ones_like(nearest))
            torch.testing.assert_close(out[:, i, k], expected, rtol=1e-4, atol=1e-5)


def test_local_matching_with_dilation_one_is_plain_and_memory_is_window_bound():
    g = torch.Generator().manual_seed(4)
    q, r = torch.randn(1, 3, 10, 10, generator=g), torch.randn(1, 3, 10, 10, generator=g)
    masks = torch.rand(1, 1, 10, 10, generator=g) > 0.5
    torch.testing.assert_close(local_matching(q, r, masks, (2,), dilation=1), local_matching(q, r, masks, (2,)))
    assert (local_matching(q, r, masks, (0,)) <= 1).all()
