"""J, F, seg2bmap and db_statistics against hand-made masks with known answers, and the cropped fast path
against a full-frame transcription of the official algorithm."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from selfvos.eval.davis import (
    boundary_f, boundary_radius, db_statistics, decay_bins, disk, jaccard, region_and_boundary, seg2bmap,
)


def test_seg2bmap_square_known_map():
    seg = np.zeros((8, 8), bool)
    seg[2:5, 2:5] = True
    expected = np.zeros((8, 8), bool)
    expected[1, 1:5] = expected[4, 1:5] = True
    expected[1:5, 1] = expected[1:5, 4] = True
    np.testing.assert_array_equal(seg2bmap(seg), expected)


def test_seg2bmap_image_border_is_never_boundary():
    assert not seg2bmap(np.ones((6, 7), bool)).any()
    seg = np.zeros((6, 7), bool)
    seg[:, -1] = True  # a foreground last column: its west neighbour column is the boundary, not it
    expected = np.zeros((6, 7), bool)
    expected[:, -2] = True
    np.testing.assert_array_equal(seg2bmap(seg), expected)


def test_radius_and_disk():
    assert boundary_radius((480, 854)) == 8  # ceil(0.008 * 979.6)
    assert boundary_radius((240, 427)) == 4  # ceil(3.92)
    assert boundary_radius((480, 854), bound_th=3) == 3
    k = disk(2)
    assert k.shape == (5, 5) and k.sum() == 13  # x^2 + y^2 <= 4: rows of 1, 3, 5, 3, 1 pixels
    assert k[0, 2] == 1 and k[0, 1] == 0 and k[1, 1] == 1


def test_jaccard_known_answers():
    g = np.zeros((4, 4), bool)
    p = np.zeros((4, 4), bool)
    assert jaccard(g, p) == 1.0  # both empty
    g[0, :2] = True
    assert jaccard(g, p) == 0.0  # one empty
    p[0, 1:3] = True
    assert jaccard(g, p) == pytest.approx(1 / 3)
    void = np.zeros((4, 4), bool)
    void[0, 2] = True  # the predicted-only pixel is void: 1 / 2
    assert jaccard(g, p, void) == pytest.approx(1 / 2)
    stack = jaccard(np.stack([g, g]), np.stack([p, g]))
    np.testing.assert_allclose(stack, [1 / 3, 1.0])


def test_boundary_f_empty_cases():
    empty, full = np.zeros((10, 10), bool), np.ones((10, 10), bool)
    half = empty.copy()
    half[:5] = True
    assert boundary_f(empty, empty) == 1.0
    assert boundary_f(half, empty) == 0.0  # GT boundary, no predicted boundary
    assert boundary_f(empty, half) == 0.0  # predicted boundary, no GT boundary
    assert boundary_f(full, full) == 1.0  # a full frame has no boundary at all
    assert boundary_f(full, half) == 0.0


def test_boundary_f_known_answer_with_pixel_tolerance():
    gt = np.zeros((20, 20), bool)
    gt[:10] = True  # boundary: row 9 (20 px)
    pred = np.zeros((20, 20), bool)
    pred[:10, :10] = True
    pred[:13, 10:] = True  # boundary: row 9 cols 0-9, col 9 rows 10-12, row 12 cols 10-19 (23 px)
    precision, recall = 12 / 23, 12 / 20  # within 2 px: 10 + 2 predicted, 12 GT (cols 0-11)
    assert boundary_f(gt, pred, bound_th=2) == pytest.approx(2 * precision * recall / (precision + recall))
    shifted = np.zeros((20, 20), bool)
    shifted[:13] = True  # boundary 3 rows away
    assert boundary_f(gt, shifted, bound_th=2) == 0.0
    assert boundary_f(gt, shifted, bound_th=3) == 1.0


def _official_like_f(gt, pred, void, radius):
    """Full-frame transcription of the official f_measure (no crop), with scipy's dilation."""
    keep = ~void
    gb, pb = seg2bmap(gt & keep), seg2bmap(pred & keep)
    st = disk(radius).astype(bool)
    gd, pd = ndimage.binary_dilation(gb, st), ndimage.binary_dilation(pb, st)
    n_g, n_p = gb.sum(), pb.sum()
    if n_g == 0 and n_p == 0:
        return 1.0
    if n_g == 0 or n_p == 0:
        return 0.0
    prec, rec = (pb & gd).sum() / n_p, (gb & pd).sum() / n_g
    return 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)


def test_cropped_fast_path_matches_full_frame_reference():
    rng = np.random.default_rng(0)
    h, w = 60, 90
    yy, xx = np.mgrid[:h, :w]
    for trial in range(40):
        masks = []
        for _ in range(2):
            cy, cx = rng.uniform(-10, h + 10), rng.uniform(-10, w + 10)  # blobs may cross the image border
            ry, rx = rng.uniform(2, 30, size=2)
            blob = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            masks.append(blob ^ (rng.random((h, w)) < 0.02 * (trial % 3)))  # some salt noise
        void = rng.random((h, w)) < 0.05 if trial % 2 else np.zeros((h, w), bool)
        gt, pred = masks
        j, f = region_and_boundary(gt, pred, void if void.any() else None)
        assert j == pytest.approx(float(jaccard(gt, pred, void)), abs=1e-12)
        assert f == pytest.approx(_official_like_f(gt, pred, void, boundary_radius((h, w))), abs=1e-12)


def test_recall_is_strict_and_mean_is_plain():
    stats = db_statistics(np.array([0.5, 0.6, 0.4, 0.9]))
    assert stats.recall == 0.5  # 0.5 itself does not count
    assert stats.mean == pytest.approx(0.6)


def test_decay_bins_follow_the_official_rounding():
    # linspace(1, 8, 5) = 1, 2.75, 4.5, 6.25, 8: the 1e-10 makes 4.5 round up to 5 (numpy rounds half to even)
    assert decay_bins(8) == [(0, 2), (2, 4), (4, 5), (5, 7)]
    values = np.arange(8) / 10
    stats = db_statistics(values)
    assert stats.decay == pytest.approx((0.0 + 0.1 + 0.2) / 3 - (0.5 + 0.6 + 0.7) / 3)
    n = 48
    edges = [round(v + 1e-10) - 1 for v in np.linspace(1, n, 5)]
    assert decay_bins(n) == [(edges[i], edges[i + 1]) for i in range(4)]
    # N=48: bins [0..12] and [35..47] are inclusive, so each holds one 0.5 frame besides 12 ones / zeros
    falling = np.concatenate([np.ones(12), np.full(24, 0.5), np.zeros(12)])
    assert db_statistics(falling).decay == pytest.approx(12.5 / 13 - 0.5 / 13)
