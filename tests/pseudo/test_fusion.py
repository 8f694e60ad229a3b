"""Fusion: component clean-up known answers, soft/binary consistency, and the fused labeler on a
synthetic panning clip."""
from __future__ import annotations

import numpy as np
import pytest

from selfvos.pseudo.fusion import FusedSaliency, fill_holes, grabcut_refine, keep_largest_components, soft_from_binary


def test_keep_largest_components_drops_small_blobs():
    binary = np.zeros((20, 20), bool)
    binary[2:12, 2:12] = True  # 100 px
    binary[15:19, 15:19] = True  # 16 px < 0.2 * 100
    binary[2:7, 15:19] = True  # 20 px = 0.2 * 100: kept
    kept = keep_largest_components(binary, 0.2)
    assert kept[5, 5] and not kept[16, 16] and kept[3, 16] and kept.sum() == 120
    assert not keep_largest_components(np.zeros((4, 4), bool)).any()


def test_fill_holes_fills_only_enclosed_background():
    ring = np.zeros((9, 9), bool)
    ring[2:7, 2:7] = True
    ring[4, 4] = False
    assert fill_holes(ring)[4, 4] and not fill_holes(ring)[0, 0]


def test_soft_from_binary_thresholds_back_to_the_binary():
    rng = np.random.default_rng(0)
    soft, binary = rng.uniform(0, 1, (16, 16)), rng.uniform(0, 1, (16, 16)) > 0.5
    out = soft_from_binary(soft, binary)
    assert ((out >= 0.5) == binary).all() and out.min() >= 0 and out.max() <= 1


def test_grabcut_recovers_a_colour_object_from_a_rough_mask(centred_object_image):
    image, mask = centred_object_image
    rough = np.zeros_like(mask)
    rough[40:80, 55:105] = True  # a box around the ellipse, 2x too big
    soft = np.where(rough, 0.6, 0.0)
    soft[55:65, 75:85] = 0.9
    refined = grabcut_refine(image, rough, soft)
    j = lambda a: (a & mask).sum() / (a | mask).sum()  # noqa: E731
    assert j(refined) > 0.9 > j(rough)


def test_grabcut_on_the_object_box(centred_object_image, monkeypatch):
    """margin_px: GrabCut sees only the box around the uncertain band grown by the margin, and still recovers
    the object; outside the box everything stays background."""
    import cv2

    from selfvos.pseudo import fusion

    image, mask = centred_object_image
    rough = np.zeros_like(mask)
    rough[40:80, 55:105] = True
    soft = np.where(rough, 0.6, 0.0)
    soft[55:65, 75:85] = 0.9
    shapes = []
    real = cv2.grabCut
    monkeypatch.setattr(fusion.cv2, "grabCut", lambda img, gc, *a: shapes.append(gc.shape) or real(img, gc, *a))
    refined = grabcut_refine(image, rough, soft, band_px=5, margin_px=10)
    top, bottom, left, right = 40 - 5 - 10, 80 + 5 + 10, 55 - 5 - 10, 105 + 5 + 10  # rough box + band + margin
    assert shapes == [(bottom - top, right - left)]
    j = lambda a: (a & mask).sum() / (a | mask).sum()  # noqa: E731
    assert j(refined) > 0.9 and not refined[:top].any() and not refined[:, :left].any()


def test_fused_labeler_on_panning_clip(panning_clip):
    labeler = FusedSaliency()
    scores = []
    for index in (0, 3, 6):
        soft = labeler(panning_clip, index)
        gt = panning_clip.mask(index) > 0
        assert soft.shape == gt.shape and 0 <= soft.min() and soft.max() <= 1
        pred = soft >= 0.5
        scores.append((pred & gt).sum() / (pred | gt).sum())
    assert np.mean(scores) > 0.7, scores
    assert labeler.config()["motion"]["type"] == "motion"


def test_fusion_weights_are_normalised_and_validated():
    labeler = FusedSaliency(w_motion=2.0, w_rank=2.0)
    assert labeler.w_motion == pytest.approx(0.5) and labeler.w_rank == pytest.approx(0.5)
    with pytest.raises(ValueError):
        FusedSaliency(w_motion=0.0, w_rank=0.0, w_appearance=0.0)
