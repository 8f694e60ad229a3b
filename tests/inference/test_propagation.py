"""Windowed top-k affinity against a dense reference, label propagation against its formula and a known
translation, and the bounded context bank."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from selfvos.inference import ContextBank, LocalWindowAffinity, OneShotConfig, OneShotPropagator
from selfvos.inference import dense_window_topk, propagate_labels

torch.set_num_threads(2)


@pytest.mark.parametrize("h,w,radius,tile,window,frames", [
    (9, 11, 3, None, "square", 3),
    (13, 7, 4, 3, "disk", 2),  # M = 2 tiles of context
    (20, 23, 5, 4, "square", 4),
    (6, 6, 12, None, "square", 2),  # window larger than the map
    (17, 19, 2, None, "disk", 3),
    (10, 10, 0, None, "square", 2),
])
def test_windowed_topk_equals_dense_reference(h, w, radius, tile, window, frames):
    gen = torch.Generator().manual_seed(h * w + radius)
    query = torch.randn(8, h, w, generator=gen, dtype=torch.float64)
    keys = torch.randn(frames, 8, h, w, generator=gen, dtype=torch.float64)
    affinity = LocalWindowAffinity(radius, 10, window, tile)
    values, indices = affinity.topk(query, [affinity.tile_keys(k) for k in keys])
    ref_values, ref_indices = dense_window_topk(query, keys, radius, 10, window)
    assert values.shape == ref_values.shape == (h * w, 10)
    torch.testing.assert_close(values, ref_values)
    finite = torch.isfinite(ref_values)
    assert torch.equal(indices[finite], ref_indices[finite])


def test_dense_reference_known_answer():
    # 1 channel, one row: affinity is the product of values; radius 1 keeps only neighbours
    query = torch.tensor([[[1.0, 2.0, 3.0]]])
    keys = torch.tensor([[[[1.0, 10.0, 100.0]]]])
    values, indices = dense_window_topk(query, keys, radius=1, topk=2)
    assert values.tolist() == [[10.0, 1.0], [200.0, 20.0], [300.0, 30.0]]
    assert indices.tolist() == [[1, 0], [2, 1], [2, 1]]


def test_propagate_labels_is_softmax_weighted_sum():
    values = torch.tensor([[0.9, 0.5, float("-inf")]])
    indices = torch.tensor([[1, 2, 0]])
    labels = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]).reshape(1, 2, 1, 3)  # (N=1, L=2, h=1, w=3)
    out = propagate_labels(values, indices, labels, temperature=0.1, size=(1, 1))
    w1, w2 = np.exp(9.0), np.exp(5.0)
    expected = [w1 / (w1 + w2), w2 / (w1 + w2)]  # index 1 -> label 0, index 2 -> label 1
    torch.testing.assert_close(out.flatten(), torch.tensor(expected, dtype=torch.float32))


def test_radius_zero_copies_labels_at_the_same_cell():
    keys = F.normalize(torch.randn(2, 4, 5, 6), dim=1)
    labels = torch.rand(2, 3, 5, 6)
    affinity = LocalWindowAffinity(radius=0, topk=1)
    values, indices = affinity.topk(keys[1], [affinity.tile_keys(k) for k in keys])
    out = propagate_labels(values, indices, labels, 0.07, (5, 6))
    torch.testing.assert_close(out, labels[1])  # itself (cosine 1) always wins


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    low = torch.from_numpy(rng.random((1, 3, h // 8, w // 8)).astype(np.float32))
    image = F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
    return (image[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def test_known_translation_is_propagated_exactly():
    stride, shift = 4, (3 * 4, -2 * 4)  # 3 cells down, 2 cells left
    big = _texture(200, 240)
    yy, xx = np.mgrid[:200, :240]
    big_mask = (((yy - 100) / 40.0) ** 2 + ((xx - 120) / 55.0) ** 2 <= 1).astype(np.uint8) * 5
    crop = (slice(40, 168), slice(40, 200))
    frame0, mask0 = big[crop], big_mask[crop]
    moved = (slice(40 - shift[0], 168 - shift[0]), slice(40 - shift[1], 200 - shift[1]))
    frame1, mask1 = big[moved], big_mask[moved]
    cfg = OneShotConfig(features="lab", short_side=None, lab_stride=stride, radius=6, num_previous=2,
                        temperature=0.05, lab_scale=0.2, refine_radius=0)  # the mask has no image edge to snap to
    out = list(OneShotPropagator(None, cfg).propagate([frame0, frame1], mask0))
    assert np.array_equal(out[0], mask0)
    pred, gt = out[1] == 5, mask1 == 5
    assert (pred & gt).sum() / (pred | gt).sum() > 0.95


def test_context_bank_is_bounded_and_keeps_the_first_frame():
    bank = ContextBank(recent=4, max_anchors=2)
    for i in range(100):
        bank.add(torch.full((1,), float(i)), torch.zeros(2, 3, 3), i, anchor=i in (0, 50, 70))
        assert len(bank) <= bank.capacity == 6
    assert bank.frame_indices == [0, 70, 96, 97, 98, 99]
    assert [float(k) for k in bank.keys()] == [0.0, 70.0, 96.0, 97.0, 98.0, 99.0]
    assert bank.labels().shape == (6, 2, 3, 3)
    bank.grow_labels(4)
    assert bank.labels().shape == (6, 4, 3, 3) and bank.labels()[:, 2:].abs().sum() == 0
    bank.clear()
    assert len(bank) == 0


def test_propagator_memory_never_exceeds_its_size():
    cfg = OneShotConfig(features="lab", short_side=None, num_previous=3, radius=2)
    propagator = OneShotPropagator(None, cfg)
    frames = [_texture(32, 48, seed=i) for i in range(12)]
    mask = np.zeros((32, 48), np.uint8)
    mask[8:20, 10:30] = 1
    for i, ids in enumerate(propagator.propagate(frames, mask)):
        assert len(propagator.bank) == min(i + 1, 1 + 3)
    assert propagator.bank.frame_indices == [0, 9, 10, 11]


def test_objects_unknown_to_a_frame_are_judged_by_the_frames_that_know_them():
    # two context frames, one cell each; frame 0 predates object 2 (channels: bg, obj1, obj2)
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]).reshape(2, 3, 1, 1)
    known = torch.tensor([[True, True, False], [True, True, True]])
    values, indices = torch.tensor([[0.0, 0.0]]), torch.tensor([[0, 1]])  # equal weights 0.5 / 0.5
    plain = propagate_labels(values, indices, labels, 1.0, (1, 1))
    torch.testing.assert_close(plain.flatten(), torch.tensor([0.5, 0.0, 0.5]))
    out = propagate_labels(values, indices, labels, 1.0, (1, 1), known)
    # bg = 0.5 (both frames know it), obj2 = 0.5 / 0.5 = 1 (only frame 1 knows it); renormalised
    torch.testing.assert_close(out.flatten(), torch.tensor([1 / 3, 0.0, 2 / 3]))
    all_known = propagate_labels(values, indices, labels, 1.0, (1, 1), torch.ones(2, 3, dtype=torch.bool))
    torch.testing.assert_close(all_known, plain)


def test_keys_of_another_size_are_refused():
    affinity = LocalWindowAffinity(radius=3)
    with pytest.raises(ValueError, match="context frame 0: expected contiguous tiled keys"):
        affinity.topk(torch.randn(4, 10, 12), [affinity.tile_keys(torch.randn(4, 14, 12))])
