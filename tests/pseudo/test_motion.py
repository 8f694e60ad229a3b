"""Motion saliency: the camera fit recovers a known affine flow, the flow cache round-trips, and an
object moving over a panning background is separated from the camera motion."""
from __future__ import annotations

import numpy as np
import pytest

from selfvos.pseudo.flow import FlowField, dis_flow
from selfvos.pseudo.motion import MotionSaliency, camera_flow, motion_residual, residual_score


def affine_flow(h: int, w: int, matrix: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    px = matrix[0, 0] * xx + matrix[0, 1] * yy + matrix[0, 2]
    py = matrix[1, 0] * xx + matrix[1, 1] * yy + matrix[1, 2]
    return np.stack([px - xx, py - yy], -1)


def test_camera_fit_recovers_affine_flow_despite_a_moving_object():
    matrix = np.array([[1.01, 0.02, 3.0], [-0.015, 0.99, -2.0]])
    flow = affine_flow(60, 80, matrix)
    flow[20:35, 30:45] += (6.0, -4.0)  # an object with its own motion (~5% of the frame)
    for model in ("affine", "homography"):
        fitted = camera_flow(flow, model=model, grid_step=4)
        background = np.ones((60, 80), bool)
        background[20:35, 30:45] = False
        np.testing.assert_allclose(fitted[background], flow[background], atol=1e-3)
        residual = motion_residual(flow, model=model, grid_step=4)
        assert residual[~background].min() > 7.0 and residual[background].max() < 1e-3


def test_residual_score_is_half_at_tau_and_monotone():
    from skimage.filters import threshold_otsu

    residual = np.concatenate([np.full(900, 0.1), np.full(100, 5.0)]).reshape(10, 100).astype(np.float32)
    score = residual_score(residual, min_motion_px=0.5)
    assert score.max() > 0.5 > score.min()
    ramp = np.linspace(0.0, 4.0, 1001, dtype=np.float32).reshape(7, 143)  # ascending in C order
    score = residual_score(ramp, min_motion_px=0.5).ravel()
    assert score[0] == 0.0 and np.all(np.diff(score) > 0)  # strictly increasing in the residual
    tau = float(threshold_otsu(ramp))
    assert tau > 0.5  # the Otsu threshold, not the floor, sets tau here
    np.testing.assert_allclose(np.interp(0.5, score, ramp.ravel()), tau, atol=0.01)  # score 1/2 at r = tau
    static = residual_score(np.full((10, 10), 0.2, np.float32), min_motion_px=0.5)
    np.testing.assert_allclose(static, 0.04 / (0.04 + 0.25), rtol=1e-5)  # tau falls back to the floor


def test_dis_flow_measures_the_pan(panning_clip):
    flow = dis_flow(panning_clip.frame(2), panning_clip.frame(3))
    background = panning_clip.mask(2) == 0
    median = np.median(flow[background][:, :], axis=0)
    np.testing.assert_allclose(median, (-2.0, -1.0), atol=0.3)  # the view moves +2,+1: content moves -2,-1


def test_flow_cache_round_trip(panning_clip, tmp_path):
    cached = FlowField(preset="fast", cache_dir=tmp_path)
    first = cached(panning_clip, 1, 2)
    path = cached.cache_path("pan", 1, 2)
    assert path.is_file() and not list(path.parent.glob("*.tmp"))
    np.testing.assert_allclose(cached(panning_clip, 1, 2), first, atol=2e-2)  # float16 on disk


def test_object_separated_from_camera_motion(panning_clip):
    labeler = MotionSaliency()
    for index in (0, 4, 7):  # first and last frame have only one neighbour
        soft = labeler(panning_clip, index)
        gt = panning_clip.mask(index) > 0
        assert soft.shape == gt.shape and soft.dtype == np.float32 and 0 <= soft.min() and soft.max() <= 1
        assert soft[gt].mean() > 0.5, (index, soft[gt].mean())
        assert soft[~gt].mean() < 0.1, (index, soft[~gt].mean())
        pred = soft >= 0.5
        assert (pred & gt).sum() / (pred | gt).sum() > 0.5


def test_single_frame_video_has_no_motion(panning_clip):
    from selfvos.data.video import InMemoryVideo

    single = InMemoryVideo(panning_clip.load([0]))
    assert not MotionSaliency()(single, 0).any()


@pytest.mark.parametrize("size", [(1, 1), (8, 10), (6, 40), (16, 1000), (300, 12)])
def test_dis_flow_on_tiny_and_elongated_frames(size):
    """Sizes OpenCV's DIS rejects (or crashes on) are padded: the flow has the frame's size and is finite."""
    rng = np.random.default_rng(0)
    for preset in ("ultrafast", "fast", "medium"):
        frames = [rng.integers(0, 255, size + (3,), dtype=np.uint8) for _ in range(2)]
        flow = dis_flow(*frames, preset)
        assert flow.shape == size + (2,) and flow.dtype == np.float32 and np.isfinite(flow).all()
