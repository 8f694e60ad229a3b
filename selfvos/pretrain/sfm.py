"""SfM-Net-style objective (Vijayanarasimhan et al. 2017, "SfM-Net: Learning of Structure and Motion from Video"):
depth, camera motion, K object masks and K rigid object motions compose a flow field that must explain the
observed flow (and, when frames are given, the next frame by warping).

Geometry (pixel units, pixel centres at integers as ``pixel_grid``; intrinsics ``f = focal * W``,
``(c_x, c_y) = ((W - 1) / 2, (H - 1) / 2)``, square pixels):

1. back-project:   ``X(p) = Z(p) ((x - c_x) / f, (y - c_y) / f, 1)``; Z is the depth map, or the constant plane
   ``default_depth`` when no depth is given;
2. objects:        ``X' = X + sum_k m_k(p) (R_k (X - p_k) + p_k + t_k - X)`` (SfM-Net's masked sum of rigid
   motions; rotation about a pivot p_k, by default the mask-weighted centroid of the points (SfM-Net predicts
   pivots; ``pivots`` may be passed), ``pivot="origin"`` rotates about the camera centre);
3. camera:         ``X'' = R_c X' + t_c`` (the point in frame t+1's camera; SfM-Net's camera pivot is left out);
4. project:        ``p'' = (f X''/Z'' + c_x, f Y''/Z'' + c_y)`` with Z'' clamped to ``min_depth``;
   composed flow ``U = p'' - p`` (B, 2, H, W), the repository's flow convention.

A motion is a (B, 6) / (B, K, 6) vector ``(axis-angle rotation (3), translation (3))``; SfM-Net uses Euler
angles, axis-angle (Rodrigues) is the stated choice here. Masks are independent values in [0, 1] (SfM-Net: one
sigmoid per object), so a pixel with no object follows the camera only.

Losses (``loss = sum_i weight_i * term_i``, terms returned unweighted and detached):

- ``flow``: robust error of U against the observed flow, Charbonnier ``sqrt(d^2 + eps^2)`` (or L1) per component,
  averaged over pixels and both components, optionally weighted by a per-pixel confidence;
- ``photometric`` (frames given): per-pixel L1 (or DSSIM) between frame t and ``backward_warp(frame_t1, U)``, as
  SfM-Net's self-supervised photometric error;
- ``smooth_flow`` / ``smooth_depth`` / ``smooth_mask``: SfM-Net's first-order L1 smoothness priors; depth is
  divided by its per-image mean first, so the prior does not favour shrinking the depth.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from selfvos.layers.warp import pixel_grid
from selfvos.pretrain.morel import PHOTOMETRIC, photometric_map, smoothness_l1

FLOW_PENALTIES = ("charbonnier", "l1")
PIVOTS = ("centroid", "origin")


@dataclass
class SfMConfig:
    """Camera, composition and loss settings of :class:`SfMObjective`."""

    focal: float = 1.0  # focal length as a fraction of the image width (f = focal * W pixels)
    default_depth: float = 1.0  # depth of the constant plane used when no depth map is given
    min_depth: float = 1e-3  # projected depth is clamped to at least this
    pivot: str = "centroid"  # object rotation pivot: mask-weighted centroid of the points, or the camera "origin"
    flow_weight: float = 1.0
    flow_penalty: str = "charbonnier"  # "charbonnier" or "l1"
    charbonnier_eps: float = 1e-3  # pixels
    photometric_weight: float = 1.0  # used when frames are given
    photometric: str = "l1"  # "l1" (SfM-Net) or "dssim"
    smooth_flow_weight: float = 0.0
    smooth_depth_weight: float = 0.0  # used when a depth map is given
    smooth_mask_weight: float = 0.0


def skew(vectors: torch.Tensor) -> torch.Tensor:
    """Cross-product matrices: (..., 3) -> (..., 3, 3) with ``skew(w) @ v = w x v``."""
    x, y, z = vectors.unbind(-1)
    zero = torch.zeros_like(x)
    rows = [torch.stack([zero, -z, y], -1), torch.stack([z, zero, -x], -1), torch.stack([-y, x, zero], -1)]
    return torch.stack(rows, -2)


def axis_angle_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """Rodrigues: axis-angle (..., 3) (direction = axis, norm = angle in radians) -> rotation (..., 3, 3).

    ``R = I + a K + b K^2`` with K = skew(w), ``a = sin(theta) / theta``, ``b = (1 - cos(theta)) / theta^2`` (computed
    as ``2 sin^2(theta / 2) / theta^2``, free of cancellation); the Taylor forms
    ``a = 1 - theta^2 / 6``, ``b = 1/2 - theta^2 / 24`` below theta = 1e-4 keep it finite and smooth.
    """
    theta2 = (rotvec * rotvec).sum(-1, keepdim=True).unsqueeze(-1)  # (..., 1, 1)
    small = theta2 < 1e-8
    theta = theta2.clamp(min=1e-8).sqrt()
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, 2.0 * torch.sin(theta / 2).square() / theta.square())
    k = skew(rotvec)
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def intrinsics(height: int, width: int, focal: float) -> tuple[float, float, float]:
    """``(f, c_x, c_y)`` in pixels: ``f = focal * width``, principal point at the image centre."""
    return focal * width, (width - 1) / 2.0, (height - 1) / 2.0


def back_project(depth: torch.Tensor, focal: float) -> torch.Tensor:
    """depth (B, 1, H, W) > 0 -> camera-frame points (B, 3, H, W): ``Z ((x - c_x) / f, (y - c_y) / f, 1)``."""
    h, w = depth.shape[-2:]
    f, cx, cy = intrinsics(h, w, focal)
    grid = pixel_grid(h, w, device=depth.device, dtype=depth.dtype)
    rays = torch.stack([(grid[0] - cx) / f, (grid[1] - cy) / f, torch.ones_like(grid[0])])  # (3, H, W)
    return depth * rays.unsqueeze(0)


def project(points: torch.Tensor, focal: float, min_depth: float) -> torch.Tensor:
    """points (B, 3, H, W) -> pixel coordinates (B, 2, H, W) ``(f X / Z + c_x, f Y / Z + c_y)``, Z >= min_depth."""
    h, w = points.shape[-2:]
    f, cx, cy = intrinsics(h, w, focal)
    z = points[:, 2:3].clamp(min=min_depth)
    x = f * points[:, 0:1] / z + cx
    y = f * points[:, 1:2] / z + cy
    return torch.cat([x, y], dim=1)


def rotate(rotations: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """rotations (B, 3, 3) applied to points (B, 3, H, W) -> (B, 3, H, W)."""
    return torch.einsum("bij,bjhw->bihw", rotations, points)


def object_pivots(points: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mask-weighted centroids ``sum_p m_k X / sum_p m_k``: points (B, 3, H, W), masks (B, K, H, W) -> (B, K, 3)."""
    weight = masks.sum(dim=(-2, -1)).clamp(min=1e-6)  # (B, K)
    return torch.einsum("bkhw,bchw->bkc", masks, points) / weight.unsqueeze(-1)


def move_objects(points: torch.Tensor, masks: torch.Tensor, object_motion: torch.Tensor,
                 pivots: torch.Tensor) -> torch.Tensor:
    """``X + sum_k m_k (R_k (X - p_k) + p_k + t_k - X)``: points (B, 3, H, W), masks (B, K, H, W), object_motion
    (B, K, 6), pivots (B, K, 3) -> (B, 3, H, W)."""
    b, k = masks.shape[:2]
    rotations = axis_angle_to_matrix(object_motion[..., :3]).reshape(b * k, 3, 3)
    centred = (points.unsqueeze(1) - pivots[..., None, None]).flatten(0, 1)  # (B*K, 3, H, W)
    moved = rotate(rotations, centred).unflatten(0, (b, k))
    moved = moved + (pivots + object_motion[..., 3:])[..., None, None]  # (B, K, 3, H, W)
    displacement = moved - points.unsqueeze(1)
    return points + (masks.unsqueeze(2) * displacement).sum(dim=1)


def move_camera(points: torch.Tensor, camera_motion: torch.Tensor) -> torch.Tensor:
    """``R_c X + t_c``: points (B, 3, H, W), camera_motion (B, 6) -> (B, 3, H, W)."""
    rotation = axis_angle_to_matrix(camera_motion[:, :3])
    return rotate(rotation, points) + camera_motion[:, 3:, None, None]


def compose_flow(masks: torch.Tensor, camera_motion: torch.Tensor, object_motion: torch.Tensor,
                 depth: torch.Tensor | None = None, *, focal: float = 1.0, default_depth: float = 1.0,
                 min_depth: float = 1e-3, pivot: str = "centroid",
                 pivots: torch.Tensor | None = None) -> torch.Tensor:
    """SfM-Net's composed flow (module docstring, steps 1-4).

    Args:
        masks: (B, K, H, W) in [0, 1].
        camera_motion: (B, 6) axis-angle rotation + translation.
        object_motion: (B, K, 6) axis-angle rotation + translation per object.
        depth: (B, 1, H, W) > 0, or None for the constant plane ``default_depth``.
        pivots: (B, K, 3) rotation pivots; None uses ``pivot`` ("centroid" or "origin").
    Returns:
        flow (B, 2, H, W) pixels: pixel p of frame t moves to p + flow(p) in frame t+1.
    """
    b, _, h, w = masks.shape
    camera_motion, object_motion = camera_motion.to(masks.dtype), object_motion.to(masks.dtype)
    if depth is None:
        depth = masks.new_full((b, 1, h, w), default_depth)
    points = back_project(depth.to(masks.dtype), focal)
    if pivots is None:
        if pivot not in PIVOTS:
            raise ValueError(f"pivot must be one of {PIVOTS}, got {pivot!r}")
        pivots = object_pivots(points, masks) if pivot == "centroid" else points.new_zeros(b, masks.shape[1], 3)
    moved = move_camera(move_objects(points, masks, object_motion, pivots), camera_motion)
    grid = pixel_grid(h, w, device=masks.device, dtype=masks.dtype).unsqueeze(0)
    return project(moved, focal, min_depth) - grid


def robust_flow_error(flow: torch.Tensor, target: torch.Tensor, penalty: str = "charbonnier", eps: float = 1e-3,
                      confidence: torch.Tensor | None = None) -> torch.Tensor:
    """Mean robust error of flow vs target (B, 2, H, W): ``sqrt(d^2 + eps^2)`` ("charbonnier") or ``|d|`` ("l1") per
    component; with confidence (B, 1, H, W) >= 0 a confidence-weighted mean -> scalar."""
    diff = flow - target.to(flow.dtype)
    if penalty == "charbonnier":
        error = (diff.square() + eps ** 2).sqrt()
    elif penalty == "l1":
        error = diff.abs()
    else:
        raise ValueError(f"flow_penalty must be one of {FLOW_PENALTIES}, got {penalty!r}")
    if confidence is None:
        return error.mean()
    weight = confidence.to(error.dtype).expand_as(error)
    return (weight * error).sum() / weight.sum().clamp(min=1e-6)


def depth_smoothness(depth: torch.Tensor) -> torch.Tensor:
    """First-order L1 smoothness of depth (B, 1, H, W) divided by its per-image mean -> scalar."""
    return smoothness_l1(depth / depth.mean(dim=(1, 2, 3), keepdim=True).clamp(min=1e-6))


class SfMObjective(nn.Module):
    """Composed SfM-Net flow against the observed flow and/or the next frame; see the module docstring."""

    def __init__(self, config: SfMConfig | None = None) -> None:
        super().__init__()
        self.config = config or SfMConfig()
        cfg = self.config
        for value, allowed, name in ((cfg.flow_penalty, FLOW_PENALTIES, "flow_penalty"),
                                     (cfg.photometric, PHOTOMETRIC, "photometric"), (cfg.pivot, PIVOTS, "pivot")):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")

    def compose(self, masks: torch.Tensor, camera_motion: torch.Tensor, object_motion: torch.Tensor,
                depth: torch.Tensor | None = None, pivots: torch.Tensor | None = None) -> torch.Tensor:
        """:func:`compose_flow` with this objective's camera settings -> (B, 2, H, W)."""
        cfg = self.config
        return compose_flow(masks, camera_motion, object_motion, depth, focal=cfg.focal,
                            default_depth=cfg.default_depth, min_depth=cfg.min_depth, pivot=cfg.pivot, pivots=pivots)

    def forward(self, masks: torch.Tensor, camera_motion: torch.Tensor, object_motion: torch.Tensor,
                flow: torch.Tensor | None = None, depth: torch.Tensor | None = None,
                frame_t: torch.Tensor | None = None, frame_t1: torch.Tensor | None = None,
                pivots: torch.Tensor | None = None,
                flow_confidence: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """masks (B, K, H, W) in [0, 1], camera_motion (B, 6), object_motion (B, K, 6), flow (B, 2, H, W) pixels,
        depth (B, 1, H, W) > 0, frame_t / frame_t1 (B, C, H, W) in [0, 1], pivots (B, K, 3), flow_confidence
        (B, 1, H, W); everything spatial at the masks' resolution. At least one of flow or the two frames.

        Returns ``loss`` (scalar, with gradient), ``flow``, ``photometric``, ``smooth_flow``, ``smooth_depth``,
        ``smooth_mask`` (unweighted, detached; 0 when not computed) and ``composed_flow`` (B, 2, H, W, detached).
        """
        cfg = self.config
        has_frames = frame_t is not None and frame_t1 is not None
        if flow is None and not has_frames:
            raise ValueError("SfMObjective needs the observed flow, the frames t and t+1, or both")
        for name, value in (("flow", flow), ("depth", depth), ("frame_t", frame_t), ("frame_t1", frame_t1)):
            if value is not None and value.shape[-2:] != masks.shape[-2:]:
                raise ValueError(f"{name} {tuple(value.shape)} must match masks {tuple(masks.shape)} in H, W")
        composed = self.compose(masks, camera_motion, object_motion, depth, pivots)
        zero = composed.new_zeros(())
        terms = {
            "flow": robust_flow_error(composed, flow, cfg.flow_penalty, cfg.charbonnier_eps, flow_confidence)
            if flow is not None else zero,
            "photometric": photometric_map(frame_t, frame_t1, composed, cfg.photometric).mean() if has_frames else zero,
            "smooth_flow": smoothness_l1(composed) if cfg.smooth_flow_weight else zero,
            "smooth_depth": depth_smoothness(depth) if cfg.smooth_depth_weight and depth is not None else zero,
            "smooth_mask": smoothness_l1(masks) if cfg.smooth_mask_weight else zero,
        }
        weights = {"flow": cfg.flow_weight, "photometric": cfg.photometric_weight,
                   "smooth_flow": cfg.smooth_flow_weight, "smooth_depth": cfg.smooth_depth_weight,
                   "smooth_mask": cfg.smooth_mask_weight}
        loss = sum(weights[name] * value for name, value in terms.items())
        out = {"loss": loss, **{name: value.detach() for name, value in terms.items()}}
        out["composed_flow"] = composed.detach()
        return out
