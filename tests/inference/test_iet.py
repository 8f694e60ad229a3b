"""IET zero-shot segmentation: a moving object and a panning camera on synthetic videos, the bilateral filter,
the seed unary, the graph cut against brute force and on a toy unary, the temporal term, and bad input."""
from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
import torch

from selfvos.inference import iet

H, W, T = 48, 64, 6
BOX = (17, 31, 18)  # object rows [17, 31), width 18


def texture(h: int, w: int, rng: np.random.Generator, colour) -> np.ndarray:
    """(h, w, 3) float in [0, 1]: a base colour plus smooth random texture (trackable by DIS)."""
    small = rng.uniform(0, 1, (h // 3 + 2, w // 3 + 2, 3))
    noise = cv2.resize(small, (w + 6, h + 6), interpolation=cv2.INTER_CUBIC)[:h, :w]
    return np.clip(np.asarray(colour)[None, None] * 0.6 + noise * 0.4, 0, 1)


def synthetic_video(mode: str, seed: int = 0):
    """Frames (T, H, W, 3) uint8 and true masks (T, H, W) uint8 of a textured box on a textured background.

    ``"object"``: static camera, the box moves 3 px / frame to the right. ``"camera"``: the camera pans
    (background moves 3 px / frame to the left) while following the box, which stays put in the image.
    """
    rng = np.random.default_rng(seed)
    background = texture(H, W + 3 * T, rng, (0.2, 0.6, 0.3))
    top, bottom, width = BOX
    obj = texture(bottom - top, width, rng, (0.85, 0.25, 0.2))
    frames, masks = [], []
    for t in range(T):
        shift, left = (0, 8 + 3 * t) if mode == "object" else (3 * t, 22)
        frame = background[:, shift : shift + W].copy()
        frame[top:bottom, left : left + width] = obj
        mask = np.zeros((H, W), np.uint8)
        mask[top:bottom, left : left + width] = 1
        frames.append((frame * 255).astype(np.uint8))
        masks.append(mask)
    return np.stack(frames), np.stack(masks)


def indicator_embedder(masks: np.ndarray, noise: float = 0.3, seed: int = 1):
    """Embedding = the true object indicator mapped to one of two random 8-d vectors, plus Gaussian noise,
    at half resolution (so the upsampling path runs)."""
    rng = np.random.default_rng(seed)
    fg, bg = rng.normal(size=8), rng.normal(size=8)

    def embed(frames: np.ndarray) -> np.ndarray:
        half = masks[:, ::2, ::2, None].astype(np.float32)
        e = half * fg + (1 - half) * bg + noise * rng.normal(size=half.shape[:3] + (8,))
        return e.transpose(0, 3, 1, 2).astype(np.float32)

    return embed


def colour_embedder(frames: np.ndarray) -> torch.Tensor:
    """Embedding = Lab colour plus a fixed random 3x3 convolution of it: (T, 19, H, W)."""
    weight = torch.randn(16, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    lab = torch.from_numpy(np.stack([iet.lab_image(f) for f in frames]).transpose(0, 3, 1, 2))
    return torch.cat([3 * lab, torch.nn.functional.conv2d(lab, weight, padding=1)], 1)


def mean_iou(pred: np.ndarray, true: np.ndarray) -> float:
    inter = (pred.astype(bool) & true.astype(bool)).sum((1, 2))
    union = (pred.astype(bool) | true.astype(bool)).sum((1, 2))
    return float(np.mean(inter / np.maximum(union, 1)))


@pytest.mark.parametrize("mode", ["object", "camera"])
@pytest.mark.parametrize("embedder", ["indicator", "colour"])
@pytest.mark.parametrize("motion_weight", [0.0, 0.7])
def test_segment_video_recovers_moving_object(mode, embedder, motion_weight):
    frames, masks = synthetic_video(mode)
    embed = indicator_embedder(masks) if embedder == "indicator" else colour_embedder
    pred = iet.segment_video(frames, embed, iet.IETConfig(motion_weight=motion_weight))
    assert pred.shape == masks.shape and pred.dtype == np.uint8 and set(np.unique(pred)) <= {0, 1}
    assert mean_iou(pred, masks) > 0.8


def test_panning_camera_needs_the_camera_residual():
    """Under a pan the raw flow magnitude is large on the background and zero on the object; the residual
    after the camera fit is the other way round, which is what the seeds follow."""
    frames, masks = synthetic_video("camera")
    forward, backward = iet.pair_flows(frames)
    scores = iet.motion_scores(forward, backward, iet.IETConfig())
    magnitude = np.linalg.norm(forward[1], axis=-1)
    inside, outside = masks[1].astype(bool), ~masks[1].astype(bool)
    assert magnitude[inside].mean() < magnitude[outside].mean()
    assert scores[1][inside].mean() > 0.5 > scores[1][outside].mean()


def test_segment_video_downscales_to_working_size_and_back():
    frames, masks = synthetic_video("object")
    big_frames = np.stack([cv2.resize(f, (2 * W, 2 * H), interpolation=cv2.INTER_NEAREST) for f in frames])
    big_masks = np.stack([cv2.resize(m, (2 * W, 2 * H), interpolation=cv2.INTER_NEAREST) for m in masks])
    seen = []

    def embed(work):
        seen.append(work.shape)
        return indicator_embedder(masks)(work)

    pred = iet.segment_video(big_frames, embed, iet.IETConfig(max_side=W))
    assert seen == [(T, H, W, 3)]
    assert pred.shape == big_masks.shape and mean_iou(pred, big_masks) > 0.8


def test_bilateral_filter_smooths_within_embedding_regions_not_across():
    rng = np.random.default_rng(0)
    region = np.zeros((32, 32), bool)
    region[:, 16:] = True
    score = np.where(region, 1.0, 0.0)
    flips = rng.uniform(size=score.shape) < 0.2
    noisy = np.where(flips, 1.0 - score, score).astype(np.float32)
    embedding = np.stack([region, ~region]).astype(np.float32)  # unit vectors, orthogonal across regions
    cfg = iet.IETConfig(sigma_colour=0.0)
    filtered = iet.bilateral_filter(noisy, iet.bilateral_features(embedding, None, cfg), cell=4)
    assert filtered[region].min() > 0.7 and filtered[~region].max() < 0.3
    # the position kernel alone (one embedding everywhere) blurs across the boundary
    flat = iet.bilateral_filter(noisy, iet.bilateral_features(np.ones((1, 32, 32), np.float32), None, cfg), cell=4)
    assert flat[:, 15].mean() > filtered[:, 15].mean() + 0.2


def test_select_seeds_takes_the_extreme_quantiles():
    score = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    fg, bg = iet.select_seeds(score, iet.IETConfig(fg_seed_fraction=0.1, bg_seed_fraction=0.3, fg_min_score=0.5))
    assert fg.sum() == 10 and score[fg].min() >= score[~fg].max()
    assert bg.sum() == 30 and score[bg].max() <= score[~bg].min()
    fg_none, _ = iet.select_seeds(score * 0.2, iet.IETConfig(fg_min_score=0.5))
    assert not fg_none.any()


def test_seed_unary_is_softmax_of_max_cosine_similarity():
    rng = np.random.default_rng(0)
    embedding = rng.normal(size=(4, 3, 5)).astype(np.float32)
    embedding /= np.linalg.norm(embedding, axis=0, keepdims=True)
    fg = embedding[:, 0, :2].T  # two foreground seeds
    bg = embedding[:, 2, 3:].T
    prob = iet.seed_unary(embedding, fg, bg, temperature=0.2)
    flat = embedding.reshape(4, -1).T
    s_fg, s_bg = (flat @ fg.T).max(1), (flat @ bg.T).max(1)
    expected = np.exp(s_fg / 0.2) / (np.exp(s_fg / 0.2) + np.exp(s_bg / 0.2))
    np.testing.assert_allclose(prob.ravel(), expected, rtol=1e-5)
    assert prob[0, 0] > 0.5 > prob[2, 4]
    assert (iet.seed_unary(embedding, fg[:0], bg, 0.2) == 0).all()


def test_fill_missing_seeds_borrows_from_nearest_frame():
    a, b = ("a", "a"), ("b", "b")
    assert iet.fill_missing_seeds([None, a, None, None, b]) == [a, a, a, b, b]
    assert iet.fill_missing_seeds([None, None]) == [None, None]


def test_graph_cut_matches_brute_force_on_3x3():
    rng = np.random.default_rng(3)
    cost_fg, cost_bg = rng.uniform(0, 2, (3, 3)), rng.uniform(0, 2, (3, 3))
    right, down = rng.uniform(0, 1, (3, 3)), rng.uniform(0, 1, (3, 3))
    right[:, -1] = down[-1] = 0

    def energy(labels):
        unary = np.where(labels, cost_fg, cost_bg).sum()
        return unary + (right[:, :-1] * (labels[:, 1:] != labels[:, :-1])).sum() + (down[:-1] * (labels[1:] != labels[:-1])).sum()

    best = min(energy(np.array(bits, bool).reshape(3, 3)) for bits in itertools.product([0, 1], repeat=9))
    cut = iet.graph_cut(cost_fg, cost_bg, right, down)
    assert energy(cut) == pytest.approx(best)


def test_graph_cut_on_toy_unary_returns_exact_regions():
    truth = np.zeros((24, 32), bool)
    truth[6:18, 10:24] = True
    p = np.where(truth, 0.8, 0.2)
    rng = np.random.default_rng(0)
    salt = rng.uniform(size=p.shape) < 0.05  # isolated pixels whose unary points the wrong way
    p = np.where(salt, 1.0 - p, p)
    cost_fg, cost_bg = iet.unary_costs(p, 1e-3)
    image = np.repeat(truth[..., None], 3, -1).astype(np.float32)  # an edge exactly at the region boundary
    right, down = iet.pairwise_weights(image, 2.0)
    np.testing.assert_array_equal(iet.graph_cut(cost_fg, cost_bg, right, down), truth)
    assert (iet.graph_cut(cost_fg, cost_bg, 0 * right, 0 * down) != truth).any()  # the pairwise term did it


def test_pairwise_weights_drop_at_contrast_edges():
    image = np.zeros((4, 6, 3), np.float32)
    image[:, 3:] = 1.0
    right, down = iet.pairwise_weights(image, 2.0)
    assert right[:, 2].max() < 0.5 < right[:, 1].min()
    assert (right[:, -1] == 0).all() and (down[-1] == 0).all() and np.allclose(down[:-1], 2.0)


def test_warp_previous_follows_the_flow():
    mask = np.zeros((10, 12), np.uint8)
    mask[3:6, 2:5] = 1
    flow_to_previous = np.zeros((10, 12, 2), np.float32)
    flow_to_previous[..., 0] = -3.0  # the object moved 3 px right: pixel x reads the previous frame at x - 3
    warped = iet.warp_previous(mask, flow_to_previous)
    np.testing.assert_array_equal(warped[:, 3:] >= 0.5, mask[:, :-3].astype(bool))


def test_temporal_term_stabilises_a_flickering_unary():
    frames, size = 8, (20, 20)
    base = np.full((frames,) + size, 0.2)
    base[:, 4:16, 4:16] = 0.8
    flicker = np.where(np.arange(frames) % 2 == 0, 0.35, 0.65)[:, None, None]
    base[:, 4:16, 10:16] = flicker  # half the object flickers between weak bg and weak fg
    contrast = [np.zeros(size + (3,), np.float32)] * frames
    still = np.zeros((frames - 1,) + size + (2,), np.float32)

    def label_changes(weight: float) -> int:
        cfg = iet.IETConfig(temporal_weight=weight, pairwise_weight=0.1)
        masks = iet.temporal_graph_cuts(base, contrast, still, cfg)
        return int(np.abs(np.diff(masks.astype(int), axis=0)).sum())

    assert label_changes(0.0) > 0
    assert label_changes(1.0) < label_changes(0.0)
    assert label_changes(1.0) == 0


def test_model_embedder_feeds_unit_range_frames_in_batches():
    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))
            self.calls = []

        def encode(self, images: torch.Tensor) -> torch.Tensor:
            self.calls.append(tuple(images.shape))
            return torch.nn.functional.avg_pool2d(images[0] * self.scale, 4)[None]

    model = Encoder()
    frames = np.full((5, 16, 8, 3), 255, np.uint8)
    out = iet.model_embedder(model, batch_size=2)(frames)
    assert model.calls == [(1, 2, 3, 16, 8), (1, 2, 3, 16, 8), (1, 1, 3, 16, 8)]
    assert tuple(out.shape) == (5, 3, 4, 2) and torch.allclose(out, torch.ones_like(out))


def test_instance_embeddings_are_unit_and_projected():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(3, 16, 5, 6)).astype(np.float32)
    emb = iet.instance_embeddings(np.zeros((3, 10, 12, 3), np.uint8), lambda f: features, pca_dim=4)
    assert tuple(emb.shape) == (3, 4, 5, 6)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3, 5, 6), atol=1e-5)
    up = iet.upsample_embedding(emb[0], (10, 12))
    assert up.shape == (4, 10, 12) and np.allclose(np.linalg.norm(up, axis=0), 1, atol=1e-5)
    with pytest.raises(ValueError, match="embed must return"):
        iet.instance_embeddings(np.zeros((3, 10, 12, 3), np.uint8), lambda f: features[:2])


def test_principal_projection_keeps_a_low_rank_structure():
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(2, 10))
    coords = rng.normal(size=(2, 4, 4, 2))
    features = torch.from_numpy((coords @ basis).transpose(0, 3, 1, 2).astype(np.float32))  # rank-2 in 10-d
    projected = iet.principal_projection(features, 2)
    flat_in = features.permute(0, 2, 3, 1).reshape(-1, 10).double()
    flat_out = projected.permute(0, 2, 3, 1).reshape(-1, 2).double()
    torch.testing.assert_close(torch.cdist(flat_out, flat_out), torch.cdist(flat_in, flat_in), atol=1e-3, rtol=1e-3)
    assert tuple(projected.shape) == (2, 2, 4, 4)


@pytest.mark.parametrize(
    "frames, message",
    [
        ([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8)], "mixed shapes"),
        (np.zeros((1, 8, 8, 3), np.uint8), "at least 2 frames"),
        (np.zeros((3, 8, 8), np.uint8), r"\(T, H, W, 3\)"),
        (np.zeros((3, 8, 8, 3), np.float32), "uint8"),
    ],
)
def test_bad_input_raises_value_error(frames, message):
    with pytest.raises(ValueError, match=message):
        iet.segment_video(frames, colour_embedder)


def test_foreground_probability_mixes_seeds_and_motion():
    p = iet.foreground_probability(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]), 0.25)
    np.testing.assert_allclose(p, [[0.75, 0.25]])


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="pairwise_feature"):
        iet.IETConfig(pairwise_feature="depth")
    with pytest.raises(ValueError, match="fg_seed_fraction"):
        iet.IETConfig(fg_seed_fraction=1.5)
    with pytest.raises(ValueError, match="motion_weight"):
        iet.IETConfig(motion_weight=-0.1)
