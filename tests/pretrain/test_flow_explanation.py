"""Flow explanation: the loss formulas against numpy, piecewise motion explained by the true regions, a moving
square recovered by optimising free segment logits, gradients, temporal consistency, the object rule."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from selfvos.layers.motion_models import motion_basis, motion_flow
from selfvos.layers.warp import pixel_grid
from selfvos.pretrain.flow_explanation import (FlowExplanation, FlowExplanationConfig, object_segments,
                                               temporal_consistency, warp_validity)


pytestmark = pytest.mark.usefixtures("one_thread")


def random_segments(b: int, k: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, k, h, w, generator=torch.Generator().manual_seed(seed)).mul(2).softmax(1)


def numpy_loss(segments: np.ndarray, flow: np.ndarray, form: str, normalization: str, model: str, eps: float) -> float:
    """The module docstring's formulas, with theta from numpy.linalg.lstsq on sqrt(fit weight)-scaled rows."""
    b, k, h, w = segments.shape
    basis = motion_basis(h, w, model, dtype=torch.float64).numpy().T  # (N, P)
    f = flow.reshape(b, 2, -1).transpose(0, 2, 1)  # (B, N, 2)
    m = segments.reshape(b, k, -1)
    losses = []
    for i in range(b):
        residuals = []
        for j in range(k):
            fit_w = m[i, j] if form == "expected" else m[i, j] ** 2
            root = np.sqrt(fit_w)[:, None]
            theta = np.linalg.lstsq(basis * root, f[i] * root, rcond=None)[0]
            residuals.append(f[i] - basis @ theta)  # (N, 2)
        r = np.stack(residuals)  # (K, N, 2)
        if form == "segments":
            per_pixel = (m[i][:, :, None] ** 2 * r ** 2).sum(0)
        elif form == "mixture":
            per_pixel = (m[i][:, :, None] * r).sum(0) ** 2
        else:
            per_pixel = (m[i][:, :, None] * r ** 2).sum(0)
        loss = per_pixel.mean()
        if normalization == "variance":
            loss /= ((f[i] - f[i].mean(0)) ** 2).mean() + eps
        losses.append(loss)
    return float(np.mean(losses))


@pytest.mark.parametrize("normalization", ["pixels", "variance"])
@pytest.mark.parametrize("form", ["segments", "mixture", "expected"])
def test_reconstruction_loss_matches_the_formula(form, normalization):
    segments = random_segments(2, 3, 8, 10)
    flow = 3 * torch.randn(2, 2, 8, 10, generator=torch.Generator().manual_seed(1))
    cfg = FlowExplanationConfig(num_segments=3, reconstruction=form, normalization=normalization, ridge=0.0)
    out = FlowExplanation(cfg)(segments, flow)
    expected = numpy_loss(segments.double().numpy(), flow.double().numpy(), form, normalization, "quadratic", cfg.variance_eps)
    assert out["flow_reconstruction"].item() == pytest.approx(expected, rel=1e-4)
    assert out["temporal"].item() == 0.0
    torch.testing.assert_close(out["loss"], cfg.flow_weight * out["flow_reconstruction"])


def test_flow_is_clipped_and_low_resolution_segments_are_upsampled():
    segments = random_segments(1, 2, 4, 5)
    flow = 30 * torch.randn(1, 2, 8, 10, generator=torch.Generator().manual_seed(2))
    clipped = FlowExplanation(FlowExplanationConfig(flow_clip=20.0))(segments, flow)["flow_reconstruction"]
    up = torch.nn.functional.interpolate(segments, size=(8, 10), mode="bilinear", align_corners=False)
    manual = FlowExplanation(FlowExplanationConfig(flow_clip=0.0))(up, flow.clamp(-20, 20))["flow_reconstruction"]
    torch.testing.assert_close(clipped, manual)
    unclipped = FlowExplanation(FlowExplanationConfig(flow_clip=0.0))(up, flow)["flow_reconstruction"]
    assert unclipped > 1.5 * clipped


def piecewise_flow(model: str, h: int = 12, w: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """A flow of the model class on the left half and another on the right half; one-hot true segments."""
    basis = motion_basis(h, w, model)
    theta = torch.randn(1, 2, basis.shape[0], 2, generator=torch.Generator().manual_seed(3)) * 2
    per_segment = motion_flow(theta, basis, (h, w))[0]  # (2, 2, H, W)
    truth = torch.zeros(1, 2, h, w)
    truth[:, 0, :, : w // 2] = 1.0
    truth[:, 1] = 1.0 - truth[:, 0]
    flow = (truth[0].unsqueeze(1) * per_segment).sum(0, keepdim=True)
    return flow, truth


@pytest.mark.parametrize("form", ["segments", "mixture", "expected"])
@pytest.mark.parametrize("model", ["affine", "quadratic"])
def test_true_regions_explain_a_piecewise_parametric_flow(model, form):
    flow, truth = piecewise_flow(model)
    objective = FlowExplanation(FlowExplanationConfig(motion_model=model, reconstruction=form, normalization="variance"))
    at_truth = objective(truth, flow)["flow_reconstruction"]
    swapped = objective(truth.flip(1), flow)["flow_reconstruction"]  # same partition, labels exchanged
    top_bottom = torch.zeros_like(truth)
    top_bottom[:, 0, :6] = 1.0
    top_bottom[:, 1] = 1.0 - top_bottom[:, 0]
    uniform = torch.full_like(truth, 0.5)
    assert at_truth < 1e-6 and swapped < 1e-6
    assert objective(top_bottom, flow)["flow_reconstruction"] > 0.005
    assert objective(uniform, flow)["flow_reconstruction"] > 0.005


def moving_square_scene(t: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame t of a 10 px square translating by (2, 1) px per frame over a background zooming by 5 %:
    ground-truth mask (H, W) and flow t -> t+1 (1, 2, H, W)."""
    y0, x0 = 8 + t, 6 + 2 * t
    mask = torch.zeros(size, size)
    mask[y0:y0 + 10, x0:x0 + 10] = 1.0
    flow = 0.05 * (pixel_grid(size, size) - (size - 1) / 2)
    flow[0][mask > 0], flow[1][mask > 0] = 2.0, 1.0
    return mask, flow.unsqueeze(0)


def iou(probability: torch.Tensor, mask: torch.Tensor) -> float:
    pred, truth = probability > 0.5, mask > 0
    return (pred & truth).sum().item() / (pred | truth).sum().item()


def test_free_segments_recover_a_moving_square():
    torch.manual_seed(0)
    (mask0, flow0), (mask1, flow1) = moving_square_scene(0), moving_square_scene(1)
    objective = FlowExplanation()  # default config: K = 2, quadratic, temporal term on
    logits = torch.nn.Parameter(0.01 * torch.randn(2, 2, 32, 32))  # frames t and t+1
    optimiser = torch.optim.Adam([logits], lr=0.1)
    for _ in range(200):
        segments = logits.softmax(1)
        loss = objective(segments[:1], flow0, next_segments=segments[1:])["loss"] + objective(segments[1:], flow1)["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        segments = logits.softmax(1)
        final = objective(segments[:1], flow0, next_segments=segments[1:])
        foreground = objective.object_mask(segments)
    assert iou(foreground[0], mask0) > 0.9 and iou(foreground[1], mask1) > 0.9
    assert final["flow_reconstruction"] < 0.01 and final["temporal"] < 0.05


@pytest.mark.parametrize("detach_fit", [False, True])
def test_gradients_reach_the_segments_and_empty_segments_are_safe(detach_fit):
    _, flow = moving_square_scene(0, size=16)
    logits = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    logits[:, 2] = -1e4  # softmax underflows to exactly 0: an empty segment
    logits.requires_grad_()
    segments = logits.softmax(1)
    assert segments[:, 2].max() == 0.0
    cfg = FlowExplanationConfig(num_segments=3, detach_fit=detach_fit)
    out = FlowExplanation(cfg)(segments, flow, next_segments=segments.roll(1, dims=-1))
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[:, :2].abs().sum() > 0
    direct = torch.zeros(1, 3, 16, 16)
    direct[:, 0, :, :8], direct[:, 1, :, 8:] = 1.0, 1.0  # exact zeros everywhere in segment 2
    direct.requires_grad_()
    FlowExplanation(cfg)(direct, flow)["loss"].backward()
    assert torch.isfinite(direct.grad).all() and direct.grad.abs().sum() > 0


@pytest.mark.parametrize("distance", ["l1", "sym_kl"])
def test_temporal_term_is_zero_for_flow_consistent_segments(distance):
    cfg = FlowExplanationConfig(temporal_distance=distance)
    segments = random_segments(2, 2, 10, 12)
    flow = torch.zeros(2, 2, 10, 12)
    flow[:, 0], flow[:, 1] = 2.0, 1.0  # everything moves 2 px right, 1 px down
    moved = torch.roll(segments, shifts=(1, 2), dims=(2, 3))
    assert temporal_consistency(segments, moved, flow, cfg).item() < 1e-6
    assert temporal_consistency(segments, segments, flow, cfg).item() > 0.05  # ignores the motion
    assert temporal_consistency(segments, moved, torch.zeros_like(flow), cfg).item() > 0.05
    out = FlowExplanation(cfg)(segments, flow, next_segments=random_segments(2, 2, 10, 12, seed=5))
    assert out["temporal"].item() > 0.05
    torch.testing.assert_close(out["loss"], out["flow_reconstruction"] + cfg.temporal_weight * out["temporal"])


def test_temporal_matching_forgives_swapped_segment_labels():
    segments = random_segments(1, 3, 10, 12)
    flow = torch.zeros(1, 2, 10, 12)
    swapped = segments[:, [2, 0, 1]]
    best = FlowExplanationConfig(num_segments=3)
    assert temporal_consistency(segments, swapped, flow, best).item() < 1e-6
    identity = FlowExplanationConfig(num_segments=3, temporal_matching="identity")
    l1 = (segments - swapped).abs().sum(1).mean() / 2  # every pixel valid under zero flow
    torch.testing.assert_close(temporal_consistency(segments, swapped, flow, identity), l1)
    kl = FlowExplanationConfig(num_segments=3, temporal_matching="identity", temporal_distance="sym_kl")
    p, q = segments, swapped
    sym_kl = ((p * (p / q).log()).sum(1) + (q * (q / p).log()).sum(1)).mean() / 2
    torch.testing.assert_close(temporal_consistency(segments, swapped, flow, kl), sym_kl)


def test_validity_excludes_targets_outside_the_frame_and_occlusions():
    flow = torch.zeros(1, 2, 6, 8)
    flow[:, 0], flow[:, 1] = 2.0, 1.0
    valid = warp_validity(flow)
    assert valid[0, :5, :6].min() == 1.0 and valid[0, 5].max() == 0.0 and valid[0, :, 6:].max() == 0.0
    assert torch.equal(warp_validity(flow, backward_flow=-flow), valid)  # consistent: nothing occluded
    assert warp_validity(flow, backward_flow=flow).max() == 0.0  # |F + B| = 2|F| fails the check


def square_segments(k: int = 2, size: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot segments: a central 6 px square object; background in segment 0 (K = 2) or split into a
    top and a bottom segment (K = 3). Returns (segments (1, K, H, W), object mask (H, W))."""
    obj = torch.zeros(size, size)
    obj[7:13, 7:13] = 1.0
    segments = torch.zeros(1, k, size, size)
    if k == 2:
        segments[0, 0], segments[0, 1] = 1.0 - obj, obj
    else:
        top = torch.zeros(size, size)
        top[: size // 2] = 1.0
        segments[0, 0], segments[0, 1], segments[0, 2] = top * (1 - obj), obj, (1 - top) * (1 - obj)
    return segments, obj


def test_border_rule_picks_the_segment_away_from_the_border():
    segments, obj = square_segments(2)
    assert torch.equal(object_segments(segments)[0], obj)
    assert torch.equal(object_segments(segments.flip(1))[0], obj)  # channel order does not matter
    assert torch.equal(object_segments(segments, rule="area")[0], obj)
    split, obj = square_segments(3)
    assert torch.equal(object_segments(split, border_threshold=0.3)[0], obj)  # both halves cover 1/2 of the band
    assert object_segments(split, border_threshold=0.5)[0].sum() > obj.sum()  # one half kept as "object"


def test_config_is_validated():
    with pytest.raises(ValueError, match="reconstruction"):
        FlowExplanationConfig(reconstruction="l2")
    with pytest.raises(ValueError, match="unknown motion model"):
        FlowExplanationConfig(motion_model="homography")
    with pytest.raises(ValueError, match="num_segments"):
        FlowExplanation(FlowExplanationConfig(num_segments=3))(random_segments(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))
