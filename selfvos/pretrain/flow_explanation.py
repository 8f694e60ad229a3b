"""Flow explanation (Guess What Moves, Choudhury et al. BMVC 2022): segments whose flow a simple motion model explains.

The frame head predicts K soft segments m (B, K, H, W), a distribution over K at every pixel, from the image
alone. For each segment a parametric motion model (``selfvos.layers.motion_models``, affine or quadratic)
is fitted in closed form to the observed flow F by weighted least squares, and the loss asks that the
fitted models explain the flow. With residuals r_k = F - F_hat_k and N = H*W pixels, per image:

    "segments" (default; GWM paper Sec. 3.1):   fit weights m_k^2,  L = sum_k sum_n m_kn^2 ||r_kn||^2 / (2N)
    "mixture"  (GWM official code):             fit weights m_k^2,  L = sum_n ||sum_k m_kn r_kn||^2 / (2N)
    "expected" (mixture-of-experts error):      fit weights m_k,    L = sum_k sum_n m_kn ||r_kn||^2 / (2N)

Source: github.com/karazijal/guess-what-moves @ d1ca75e, ``src/flow_reconstruction.py`` and
``src/losses/reconstruction_loss.py``: the least squares uses rows E_n * m_kn and targets F_n * m_kn (so
weights m^2), the reconstruction is ``sum_k m_k * E theta_k`` and the loss is ``nn.MSELoss`` (mean over
B, the 2 components and the pixels, in pixels^2) of the flow against it, with the flow clipped to
+-20 px and a loss multiplier 0.03. The paper's Sec. 3.1 writes the per-segment sum
L = sum_k ||m_k (F - E theta_k)||^2 (as quoted in a fork's docstring; the PDF was not re-checked here).
For hard masks the three forms agree. "segments" is the default (the paper's form); "expected" is
minimised by a hard assignment of each pixel to its best-explaining segment, where "segments" prefers a
soft split ``m_1 = e_2 / (e_1 + e_2)`` between two segments with squared residuals e_1, e_2 at a pixel.

Normalisation: ``"pixels"`` keeps GWM's mean squared error in pixels^2; ``"variance"`` divides each image's
loss by its flow variance ``mean_n ||F_n - mean F||^2 / 2 + variance_eps``: the error relative to the
flow's own spread about its mean, the same for a flow and a scaled copy of it (up to variance_eps).

Temporal consistency (not in GWM): the segments of frame t+1 sampled at ``p + F(p)`` (``backward_warp``)
should equal the segments of frame t at p, on pixels whose target lies inside the frame (and, given
the backward flow, passes the forward-backward occlusion check |F + B(p + F)|^2 < alpha (|F|^2 +
|B(p + F)|^2) + beta of UnFlow, Meister et al. AAAI 2018). Distance per pixel: ``"l1"`` = sum_k |m - m'| / 2
(total variation, in [0, 1]) or ``"sym_kl"`` = (KL(m || m') + KL(m' || m)) / 2; averaged over valid
pixels per image, then over the batch. The K segments are unordered, so by default the channels of
frame t+1 are matched to those of frame t by the permutation of least distance (``temporal_matching``;
"identity" compares channel k with channel k). Without the matching, two frames whose segments are
right but swapped cost the maximum and the term fights the reconstruction (seen on the synthetic test).

Object segment(s) (:func:`object_segments`), label-free: the background touches the image border.
"border": segment k's coverage of the border band c_k = mean over band pixels of m_k (sum_k c_k = 1); the
segment with the largest coverage, and any other with c_k > ``border_threshold``, is background; the
foreground probability is the sum of the remaining segments. "area": the single segment with the least
total mass is the object. Settings (``object_rule``, ``border_width``, ``border_threshold``) are to be
chosen on DAVIS-2016 train. (GWM's own DAVIS evaluation picks, per frame, the segment with the highest
IoU against the ground truth, which is not label-free.)
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from selfvos.layers.motion_models import fit_motion, motion_basis, motion_flow, num_parameters
from selfvos.layers.warp import backward_warp, pixel_grid

RECONSTRUCTIONS = ("segments", "mixture", "expected")
NORMALIZATIONS = ("pixels", "variance")
TEMPORAL_DISTANCES = ("l1", "sym_kl")
TEMPORAL_MATCHINGS = ("best_permutation", "identity")
MAX_PERMUTED_SEGMENTS = 6
OBJECT_RULES = ("border", "area")


@dataclass
class FlowExplanationConfig:
    """Settings of :class:`FlowExplanation` (see the module docstring for every formula).

    num_segments: K, checked against the segments given to ``forward``. K = 2 (object / background) is
        GWM's setting for DAVIS-2016.
    motion_model: "quadratic" (GWM's default, 12 parameters per segment: handles the perspective
        flow of a moving camera over a plane) or "affine".
    reconstruction: "segments" | "mixture" | "expected".
    normalization: "pixels" (GWM) | "variance"; variance_eps (pixels^2) bounds the gain on near-static frames.
    flow_clip: flow components clipped to +-flow_clip pixels before fitting (GWM: 20); 0 disables.
    ridge: Tikhonov term of the least squares (per-pixel-mean normal matrix).
    detach_fit: fit theta on detached segments, so gradients reach the segments only through the
        residual weighting and not through the motion parameters (GWM backpropagates through the fit).
    flow_weight / temporal_weight: ``loss = flow_weight * flow_reconstruction + temporal_weight * temporal``.
        GWM has no temporal term and weights its reconstruction loss by 0.03 (flow at 480p).
    temporal_distance: "l1" | "sym_kl".
    temporal_matching: "best_permutation" (the K segments are unordered: compare frame t+1's segments
        with frame t's under the channel matching of least distance, K <= 6) | "identity".
    occlusion_alpha / occlusion_beta: forward-backward check, used only when a backward flow is given.
    object_rule / border_width / border_threshold: the object-segment rule of :func:`object_segments`;
        border_width is a fraction of the shorter image side (at least one pixel).
    """

    num_segments: int = 2
    motion_model: str = "quadratic"
    reconstruction: str = "segments"
    normalization: str = "pixels"
    variance_eps: float = 1.0
    flow_clip: float = 20.0
    ridge: float = 1e-6
    detach_fit: bool = False
    flow_weight: float = 1.0
    temporal_weight: float = 0.1
    temporal_distance: str = "l1"
    temporal_matching: str = "best_permutation"
    occlusion_alpha: float = 0.01
    occlusion_beta: float = 0.5
    object_rule: str = "border"
    border_width: float = 0.1
    border_threshold: float = 0.5

    def __post_init__(self) -> None:
        num_parameters(self.motion_model)
        for name, value, allowed in (("reconstruction", self.reconstruction, RECONSTRUCTIONS),
                                     ("normalization", self.normalization, NORMALIZATIONS),
                                     ("temporal_distance", self.temporal_distance, TEMPORAL_DISTANCES),
                                     ("temporal_matching", self.temporal_matching, TEMPORAL_MATCHINGS),
                                     ("object_rule", self.object_rule, OBJECT_RULES)):
            if value not in allowed:
                raise ValueError(f"FlowExplanationConfig.{name}={value!r}; choose one of {allowed}")
        if self.num_segments < 2:
            raise ValueError("FlowExplanationConfig.num_segments must be at least 2")
        if self.temporal_matching == "best_permutation" and self.num_segments > MAX_PERMUTED_SEGMENTS:
            raise ValueError(f"temporal_matching='best_permutation' enumerates K! matchings; use K <= "
                             f"{MAX_PERMUTED_SEGMENTS} or temporal_matching='identity'")


def resize_segments(segments: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize of (B, K, h, w) probabilities to (B, K, H, W); a convex combination, so they still sum to 1."""
    if tuple(segments.shape[-2:]) == tuple(size):
        return segments
    return F.interpolate(segments, size=tuple(size), mode="bilinear", align_corners=False)


def segment_residuals(flow: torch.Tensor, fit_weights: torch.Tensor, model: str, ridge: float) -> torch.Tensor:
    """r_k = F - F_hat_k, F_hat_k the motion model fitted with weights ``fit_weights``.

    flow (B, 2, H, W); fit_weights (B, K, H, W) -> residuals (B, K, 2, H, W).
    """
    h, w = flow.shape[-2:]
    basis = motion_basis(h, w, model, device=flow.device, dtype=flow.dtype)
    theta = fit_motion(flow, fit_weights, model, ridge=ridge, basis=basis)
    return flow.unsqueeze(1) - motion_flow(theta, basis, (h, w))


def reconstruction_error(segments: torch.Tensor, residuals: torch.Tensor, form: str) -> torch.Tensor:
    """Per-image flow reconstruction error in pixels^2, (B,): the ``form`` of the module docstring.

    segments (B, K, H, W); residuals (B, K, 2, H, W).
    """
    m = segments.unsqueeze(2)  # (B, K, 1, H, W)
    if form == "mixture":
        per_pixel = (m * residuals).sum(1).pow(2)  # (B, 2, H, W)
    elif form == "segments":
        per_pixel = (m.pow(2) * residuals.pow(2)).sum(1)
    else:  # expected
        per_pixel = (m * residuals.pow(2)).sum(1)
    return per_pixel.mean(dim=(1, 2, 3))


def flow_variance(flow: torch.Tensor) -> torch.Tensor:
    """mean_n ||F_n - mean F||^2 / 2 per image: (B, 2, H, W) -> (B,)."""
    return (flow - flow.mean(dim=(2, 3), keepdim=True)).pow(2).mean(dim=(1, 2, 3))


def flow_reconstruction_loss(segments: torch.Tensor, flow: torch.Tensor, config: FlowExplanationConfig) -> torch.Tensor:
    """Scalar flow-explanation loss: segments (B, K, H, W) probabilities, flow (B, 2, H, W) pixels, same H, W."""
    if config.flow_clip > 0:
        flow = flow.clamp(-config.flow_clip, config.flow_clip)
    fit_weights = segments if config.reconstruction == "expected" else segments.pow(2)
    if config.detach_fit:
        fit_weights = fit_weights.detach()
    residuals = segment_residuals(flow, fit_weights, config.motion_model, config.ridge)
    error = reconstruction_error(segments, residuals, config.reconstruction)
    if config.normalization == "variance":
        error = error / (flow_variance(flow) + config.variance_eps)
    return error.mean()


def warp_validity(flow: torch.Tensor, backward_flow: torch.Tensor | None = None, alpha: float = 0.01,
                  beta: float = 0.5) -> torch.Tensor:
    """(B, H, W) float: 1 where ``p + F(p)`` lies inside the frame and (given the backward flow
    (B, 2, H, W)) passes the forward-backward check of the module docstring, else 0."""
    h, w = flow.shape[-2:]
    target = pixel_grid(h, w, device=flow.device, dtype=flow.dtype).unsqueeze(0) + flow
    inside = (target[:, 0] >= 0) & (target[:, 0] <= w - 1) & (target[:, 1] >= 0) & (target[:, 1] <= h - 1)
    if backward_flow is not None:
        back = backward_warp(backward_flow, flow)
        mismatch = (flow + back).pow(2).sum(1)
        inside = inside & (mismatch < alpha * (flow.pow(2).sum(1) + back.pow(2).sum(1)) + beta)
    return inside.to(flow.dtype)


def channel_costs(a: torch.Tensor, b: torch.Tensor, valid: torch.Tensor, distance: str, eps: float = 1e-6) -> torch.Tensor:
    """cost[b, k, l]: mean over valid pixels of the per-channel distance term between channel k of ``a`` and
    channel l of ``b``, (B, K, H, W) x2 and valid (B, H, W) -> (B, K, K). Both distances are sums over
    channels, so the distance under a channel matching pi is ``sum_k cost[k, pi(k)]``."""
    x, y = a.unsqueeze(2), b.unsqueeze(1)  # (B, K, 1, H, W), (B, 1, K, H, W)
    if distance == "l1":
        term = (x - y).abs() / 2
    else:  # sym_kl: (KL(a||b) + KL(b||a)) / 2 = sum_k (a_k - b_k)(log a_k - log b_k) / 2
        x, y = x.clamp(min=eps), y.clamp(min=eps)
        term = (x - y) * (x.log() - y.log()) / 2
    weight = valid.unsqueeze(1).unsqueeze(1)
    return (term * weight).sum(dim=(3, 4)) / weight.sum(dim=(3, 4)).clamp(min=1.0)


def matched_cost(costs: torch.Tensor, matching: str) -> torch.Tensor:
    """Per-image distance (B,) from channel costs (B, K, K): the identity matching, or the best of the K!
    matchings ("best_permutation"; the segments are unordered, so a head may swap them between frames)."""
    k = costs.shape[-1]
    if matching == "identity":
        return costs.diagonal(dim1=1, dim2=2).sum(-1)
    perms = torch.tensor(list(itertools.permutations(range(k))), device=costs.device)  # (K!, K)
    rows = torch.arange(k, device=costs.device).expand_as(perms)
    return costs[:, rows, perms].sum(-1).min(dim=1).values


def temporal_consistency(segments: torch.Tensor, next_segments: torch.Tensor, flow: torch.Tensor,
                         config: FlowExplanationConfig, backward_flow: torch.Tensor | None = None) -> torch.Tensor:
    """Scalar: distance between segments (B, K, H, W) of frame t and next_segments (B, K, H, W) of frame t+1
    warped back with the forward flow (B, 2, H, W), mean over valid pixels per image, then over images."""
    warped = backward_warp(next_segments, flow)
    valid = warp_validity(flow, backward_flow, config.occlusion_alpha, config.occlusion_beta)
    costs = channel_costs(segments, warped, valid, config.temporal_distance)
    return matched_cost(costs, config.temporal_matching).mean()


def border_band(height: int, width: int, border_width: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """(H, W) indicator of the pixels within ``max(1, round(border_width * min(H, W)))`` of the image border."""
    band = max(1, round(border_width * min(height, width)))
    inner = torch.zeros(height, width, device=device, dtype=dtype)
    inner[band:height - band, band:width - band] = 1.0
    return 1.0 - inner


def object_segments(segments: torch.Tensor, rule: str = "border", border_width: float = 0.1,
                    border_threshold: float = 0.5) -> torch.Tensor:
    """Foreground probability (B, H, W) from segments (B, K, H, W): the sum of the segments picked as objects.

    "border": background = the segment covering most of the border band, plus every segment covering
    more than ``border_threshold`` of it; the rest are objects. "area": the segment of least mass.
    The choice is hard (no gradient through it); the result is differentiable in the chosen segments.
    """
    b, k, h, w = segments.shape
    if rule == "area":
        chosen = F.one_hot(segments.sum(dim=(2, 3)).argmin(1), k).to(segments.dtype)
    elif rule == "border":
        band = border_band(h, w, border_width, device=segments.device, dtype=segments.dtype)
        coverage = (segments * band).sum(dim=(2, 3)) / band.sum()  # (B, K)
        background = F.one_hot(coverage.argmax(1), k).bool() | (coverage > border_threshold)
        chosen = (~background).to(segments.dtype)
    else:
        raise ValueError(f"unknown object rule {rule!r}; choose one of {OBJECT_RULES}")
    return (segments * chosen.detach().view(b, k, 1, 1)).sum(1)


class FlowExplanation(nn.Module):
    """``objective(segments, flow, next_segments=None, backward_flow=None)`` -> ``{"loss", "flow_reconstruction", "temporal"}``.

    segments (B, K, h, w): probabilities summing to 1 over K (e.g. ``softmax`` of a K-logit head), at any
    resolution: they are resized bilinearly to the flow's (H, W). flow (B, 2, H, W): pixels, frame t -> t+1.
    next_segments (B, K, h, w): the segments of frame t+1; without them the temporal term is 0.
    backward_flow (B, 2, H, W): flow t+1 -> t, optional, only for the occlusion check of the temporal term.
    All three outputs keep their gradient; ``loss = flow_weight * flow_reconstruction + temporal_weight * temporal``.
    """

    def __init__(self, config: FlowExplanationConfig | None = None) -> None:
        super().__init__()
        self.config = config or FlowExplanationConfig()

    def forward(self, segments: torch.Tensor, flow: torch.Tensor, next_segments: torch.Tensor | None = None,
                backward_flow: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        cfg = self.config
        if segments.shape[1] != cfg.num_segments:
            raise ValueError(f"FlowExplanation: got {segments.shape[1]} segments, config.num_segments={cfg.num_segments}")
        size = flow.shape[-2:]
        segments = resize_segments(segments, size).to(flow.dtype)
        reconstruction = flow_reconstruction_loss(segments, flow, cfg)
        if next_segments is None:
            temporal = reconstruction.new_zeros(())
        else:
            temporal = temporal_consistency(segments, resize_segments(next_segments, size).to(flow.dtype), flow,
                                            cfg, backward_flow)
        loss = cfg.flow_weight * reconstruction + cfg.temporal_weight * temporal
        return {"loss": loss, "flow_reconstruction": reconstruction, "temporal": temporal}

    def object_mask(self, segments: torch.Tensor) -> torch.Tensor:
        """Foreground probability (B, H, W) of segments (B, K, H, W) by the configured object rule."""
        cfg = self.config
        return object_segments(segments, cfg.object_rule, cfg.border_width, cfg.border_threshold)
