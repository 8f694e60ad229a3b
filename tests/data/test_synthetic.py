"""Synthetic videos: determinism, exact masks, occlusion order, object and camera motion, registry entry."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from selfvos.data.synthetic import (
    SyntheticConfig,
    make_video,
    render_video,
    synthetic_collection,
    synthetic_source,
    video_seed,
)
from selfvos.errors import SelfvosInputError

CFG = SyntheticConfig(num_frames=24, height=96, width=112, min_objects=2, max_objects=4)


def test_same_seed_identical_bytes_and_different_seeds_differ():
    a, b, c = make_video(7, CFG), make_video(7, CFG), make_video(8, CFG)
    assert a.frames.tobytes() == b.frames.tobytes() and a.masks.tobytes() == b.masks.tobytes()
    assert a.frames.shape == (24, 96, 112, 3) and a.masks.shape == (24, 96, 112)
    assert a.frames.dtype == np.uint8 and a.masks.dtype == np.uint8
    assert np.abs(a.frames.astype(int) - c.frames.astype(int)).mean() > 10


@pytest.mark.parametrize("seed", range(6))
def test_masks_match_frames_and_occlusion_order(seed):
    r = render_video(seed, CFG)
    frames, masks = r.sample.frames, r.sample.masks
    n = r.sample.meta["num_objects"]
    # background pixels are exactly the background render, object pixels were painted over it
    bg = masks == 0
    assert np.array_equal(frames[bg], r.background[bg])
    changed = np.any(frames != r.background, axis=-1)
    assert changed[~bg].mean() > 0.9
    # the visible id at a pixel is the nearest object whose full extent covers it
    depth_rank = {obj: k for k, obj in enumerate(r.depth_order)}
    expected = np.zeros_like(masks)
    for obj in sorted(r.depth_order, key=depth_rank.get):  # far -> near overwrite
        expected[r.amodal[obj - 1]] = obj
    assert np.array_equal(masks, expected)
    # every object shows up somewhere, ids are exactly 1..N
    assert sorted(int(i) for i in np.unique(masks) if i) == list(range(1, n + 1))


def test_occlusions_happen_and_nearer_object_wins():
    overlaps = 0
    for seed in range(20):
        r = render_video(seed, CFG)
        for i, near in enumerate(r.depth_order):
            for far in r.depth_order[:i]:
                both = r.amodal[near - 1] & r.amodal[far - 1]
                if both.any():
                    overlaps += 1
                    assert np.all(r.sample.masks[both] != far)
    assert overlaps >= 5


def test_object_counts_within_bounds():
    cfg = SyntheticConfig(num_frames=4, height=64, width=64, min_objects=1, max_objects=3)
    counts = [make_video(s, cfg).meta["num_objects"] for s in range(40)]
    assert min(counts) >= 1 and max(counts) <= 3 and len(set(counts)) == 3


def test_objects_move_and_deform():
    r = render_video(3, CFG)
    for obj in range(1, r.sample.meta["num_objects"] + 1):
        full = r.amodal[obj - 1]
        ys, xs = np.nonzero(full[0])
        ye, xe = np.nonzero(full[-1])
        shift = np.hypot(xs.mean() - xe.mean(), ys.mean() - ye.mean())
        iou = (full[0] & full[-1]).sum() / (full[0] | full[-1]).sum()
        areas = full.reshape(len(full), -1).sum(1)
        assert shift > 2.0 or iou < 0.8, f"object {obj} barely moves"
        assert areas.max() / areas.min() > 1.05, f"object {obj} keeps a constant size"


def test_background_pans_as_the_camera_says():
    cfg = SyntheticConfig(num_frames=6, height=128, width=128, background_zoom=0.0, background_pan=(0.02, 0.02))
    checked = 0
    for seed in range(4):
        r = render_video(seed, cfg)
        g0, g1 = (cv2.cvtColor(r.background[t], cv2.COLOR_RGB2GRAY).astype(np.float64) for t in (1, 2))
        (dx, dy), _ = cv2.phaseCorrelate(g0, g1)
        cam = r.camera[2, :2] - r.camera[1, :2]  # canvas q shows at centre + zoom (q - c): content moves -zoom * dc
        expected = -cam * r.camera[1, 2]
        if np.linalg.norm(expected) < 1.0:  # bounced at a canvas edge this step
            continue
        checked += 1
        assert np.allclose([dx, dy], expected, atol=0.5), (seed, (dx, dy), expected)
    assert checked >= 3


def test_collection_is_lazy_named_and_seeded():
    cfg = SyntheticConfig(num_videos=3, num_frames=5, height=32, width=40, seed=11)
    coll = synthetic_collection(cfg)
    assert coll.names == ["synthetic_0000", "synthetic_0001", "synthetic_0002"]
    video = coll["synthetic_0001"]
    assert len(video) == 5 and not video.is_rendered
    frame = video.frame(2)
    assert video.is_rendered and frame.shape == (32, 40, 3)
    assert np.array_equal(frame, make_video(video_seed(11, 1), cfg).frames[2])
    sample = video.load([4, 0])
    assert sample.frame_names == ["00004", "00000"] and sample.masks.shape == (2, 32, 40)
    assert not coll["synthetic_0002"].is_rendered


def test_registry_entry_and_bad_options():
    from selfvos.registry import SOURCES

    coll = SOURCES.create("synthetic", num_videos=2, num_frames=3, size=48, seed=1)
    assert len(coll) == 2 and coll[0].frame(0).shape == (48, 48, 3)
    with pytest.raises(SelfvosInputError, match="unknown option"):
        synthetic_source(colour="red")
    with pytest.raises(SelfvosInputError, match="min_objects"):
        synthetic_collection(SyntheticConfig(min_objects=3, max_objects=2))
