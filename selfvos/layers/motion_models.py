"""Parametric motion models of optical flow, fitted per soft segment by weighted least squares.

A motion model writes each flow component as a linear combination of P basis functions of the pixel
position, evaluated at normalised coordinates (x, y) in [-1, 1] (``pixel_grid(normalized=True)``):

    affine     P = 3:  1, x, y                     (6 parameters for (dx, dy))
    quadratic  P = 6:  1, x, y, x^2, xy, y^2       (12 parameters; GWM's default "quad" model)

For a segment with per-pixel weights w_n >= 0 the fit solves, in closed form,

    theta = argmin_theta  sum_n w_n || F_n - E_n^T theta ||^2          (E_n: basis at pixel n, (P,))
          = (A + ridge * I)^-1 c,   A = mean_n w_n E_n E_n^T  (P, P),   c = mean_n w_n E_n F_n^T  (P, 2)

(the normal equations of the problem whose rows are scaled by sqrt(w_n)). Using means instead of sums
makes ``ridge`` independent of the resolution; it keeps the system positive definite, so an empty
segment (all w = 0) gets theta = 0 instead of NaN. The 6 x 6 systems are solved by Cholesky in float64
and the result is differentiable w.r.t. both the weights and the flow.

Flow convention as ``selfvos.layers.warp``: (B, 2, H, W) in pixels, (dx, dy).
"""
from __future__ import annotations

import torch

from selfvos.layers.warp import pixel_grid

MOTION_MODELS = {"affine": 3, "quadratic": 6}


def num_parameters(model: str) -> int:
    """P, the number of basis functions per flow component of ``model`` ("affine" 3, "quadratic" 6)."""
    try:
        return MOTION_MODELS[model]
    except KeyError:
        raise ValueError(f"unknown motion model {model!r}; choose one of {sorted(MOTION_MODELS)}") from None


def motion_basis(height: int, width: int, model: str = "quadratic", *, device: torch.device | None = None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(P, H*W) basis functions at every pixel, row-major pixels, normalised coordinates in [-1, 1].

    Rows: affine ``[1, x, y]``; quadratic ``[1, x, y, x^2, x*y, y^2]``.
    """
    num_parameters(model)  # validates the name
    x, y = pixel_grid(height, width, normalized=True, device=device, dtype=dtype).flatten(1)
    rows = [torch.ones_like(x), x, y]
    if model == "quadratic":
        rows += [x * x, x * y, y * y]
    return torch.stack(rows)


def normal_equations(flow: torch.Tensor, weights: torch.Tensor, basis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel-mean normal equations of the weighted fit.

    Args:
        flow: (B, 2, H, W) pixels.
        weights: (B, K, H, W) >= 0.
        basis: (P, H*W) from :func:`motion_basis`.
    Returns:
        A (B, K, P, P) = mean_n w_n E_n E_n^T and c (B, K, P, 2) = mean_n w_n E_n F_n^T.
    """
    n = basis.shape[1]
    w = weights.flatten(2)  # (B, K, N)
    f = flow.flatten(2)  # (B, 2, N)
    weighted_basis = w.unsqueeze(2) * basis  # (B, K, P, N)
    normal = weighted_basis @ basis.t() / n  # (B, K, P, P)
    rhs = weighted_basis @ f.unsqueeze(1).transpose(-1, -2) / n  # (B, K, P, 2)
    return normal, rhs


def fit_motion(flow: torch.Tensor, weights: torch.Tensor, model: str = "quadratic", ridge: float = 1e-6,
               basis: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted least-squares motion parameters of every segment.

    Args:
        flow: (B, 2, H, W) pixels.
        weights: (B, K, H, W) >= 0 (e.g. segment probabilities, or their squares).
        model: "affine" or "quadratic".
        ridge: added to the diagonal of the per-pixel-mean normal matrix (see the module docstring).
        basis: optional precomputed ``motion_basis(H, W, model)`` (P, H*W).
    Returns:
        theta (B, K, P, 2): column 0 models dx, column 1 dy; ``motion_flow(theta, basis, (H, W))`` is the fit.
    """
    b, _, h, w = flow.shape
    if weights.shape[0] != b or weights.shape[-2:] != (h, w):
        raise ValueError(f"weights {tuple(weights.shape)} do not match flow {tuple(flow.shape)}")
    if basis is None:
        basis = motion_basis(h, w, model, device=flow.device, dtype=flow.dtype)
    normal, rhs = normal_equations(flow, weights.to(flow.dtype), basis)
    eye = torch.eye(normal.shape[-1], device=flow.device, dtype=torch.float64)
    chol = torch.linalg.cholesky(normal.double() + ridge * eye)
    theta = torch.cholesky_solve(rhs.double(), chol)
    return theta.to(flow.dtype)


def motion_flow(theta: torch.Tensor, basis: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Flow of every segment's motion model at every pixel.

    Args:
        theta: (B, K, P, 2) from :func:`fit_motion`.
        basis: (P, H*W) from :func:`motion_basis`.
        size: (H, W) of the basis grid.
    Returns:
        (B, K, 2, H, W) pixels: ``F_hat_k[:, n] = theta_k^T E_n``.
    """
    b, k = theta.shape[:2]
    flat = theta.transpose(-1, -2) @ basis  # (B, K, 2, N)
    return flat.reshape(b, k, 2, *size)
