"""Class-conditional Gaussian mixture appearance model on feature maps (A-GAME, Johnander et al. CVPR 2019).

Every feature cell ``x_p`` (after a learned 1x1 projection to ``D`` dims) is explained by one of ``K``
Gaussian components with diagonal covariance and a uniform prior ``p(z = k) = 1 / K``. Components belong
to a class: with distractors ``K = 4``, in the paper's order

    k = 0 background base, k = 1 foreground base, k = 2 background distractor, k = 3 foreground distractor.

Closed-form estimate from soft assignments ``alpha[p, k]`` in [0, 1], with ``c`` the pseudo-count
``prior_count`` (0 gives the paper's formula; the released code adds one cell at the origin) and the
learnable floor ``r_k = softplus(raw_k)`` (D values per component):

    mu~_k    = sum_p alpha[p, k] x_p / (c + sum_p alpha[p, k])
    Sigma~_k = r_k + sum_p alpha[p, k] (x_p - mu~_k)^2 / (c + sum_p alpha[p, k])          (so Sigma~_k >= r_k)

Assignments: base components from the soft mask ``y`` (the ground truth on the first frame, the model's own
prediction later): ``alpha_0 = 1 - y``, ``alpha_1 = y`` (void cells get 0 for both). Distractors take what the
base components get wrong, with posteriors over the two base components only:

    alpha_2 = max(0, alpha_0 - p(z = 0 | x, theta_base)),   alpha_3 = max(0, alpha_1 - p(z = 1 | x, theta_base))

i.e. background cells the base model calls foreground (the distractors of the paper's figure 3) and foreground
cells it calls background. ``theta_base`` is the base model after this frame's update (the paper's
``mu^t, Sigma^t``; the released code uses the fresh estimate ``mu~^t``, identical on the first frame).

Online update with rate lambda (first frame lambda = 1): ``mu_t = (1 - lambda) mu_{t-1} + lambda mu~_t`` and
the same for the variances. Output per cell: log-likelihood ``log N(x | mu_k, diag Sigma_k)``, the log joint
``s_k = log(1/K) + log N`` (the paper's fusion input) and the log posterior ``s_k - logsumexp_j s_j``.
Everything is differentiable (end-to-end training through the estimate and the update).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

BACKGROUND, FOREGROUND, BACKGROUND_DISTRACTOR, FOREGROUND_DISTRACTOR = 0, 1, 2, 3


class GMMState(NamedTuple):
    """Parameters of N mixtures: ``mean`` (N, K, D) and diagonal ``var`` (N, K, D)."""

    mean: torch.Tensor
    var: torch.Tensor

    def components(self, start: int, stop: int) -> "GMMState":
        return GMMState(self.mean[:, start:stop], self.var[:, start:stop])


def weighted_moments(x: torch.Tensor, weights: torch.Tensor, floor: torch.Tensor,
                     prior_count: float = 0.0, eps: float = 1e-6) -> GMMState:
    """Closed-form component estimate (see the module docstring).

    x: (N, D, h, w) features; weights: (N, K, h, w) soft assignments >= 0; floor: (K, D) variance floor r_k.
    Returns mean (N, K, D) and var (N, K, D) = r_k + weighted empirical variance. A component with no weight
    gets mean 0 and variance r_k (the denominator is at least ``eps``).
    """
    x = x.flatten(2).float()  # (N, D, P)
    a = weights.flatten(2).float()  # (N, K, P)
    total = (a.sum(-1) + prior_count).clamp(min=eps).unsqueeze(-1)  # (N, K, 1)
    mean = torch.einsum("nkp,ndp->nkd", a, x) / total
    diff2 = (x.unsqueeze(1) - mean.unsqueeze(-1)).square()  # (N, K, D, P)
    var = floor.unsqueeze(0) + (diff2 * a.unsqueeze(2)).sum(-1) / total
    return GMMState(mean, var)


def blend(old: GMMState, new: GMMState, rate: float) -> GMMState:
    """Online update ``(1 - rate) * old + rate * new`` of means and variances."""
    return GMMState((1.0 - rate) * old.mean + rate * new.mean, (1.0 - rate) * old.var + rate * new.var)


def diagonal_log_likelihood(x: torch.Tensor, state: GMMState) -> torch.Tensor:
    """log N(x_p | mu_k, diag var_k) = -1/2 sum_d [log(2 pi var_kd) + (x_pd - mu_kd)^2 / var_kd].

    x: (N, D, h, w); state mean/var (N, K, D). Returns (N, K, h, w).
    """
    n, d, h, w = x.shape
    flat = x.flatten(2).float().unsqueeze(1)  # (N, 1, D, P)
    mean, var = state.mean.unsqueeze(-1), state.var.unsqueeze(-1)  # (N, K, D, 1)
    maha = ((flat - mean).square() / var).sum(2)  # (N, K, P)
    log_det = torch.log(var).sum(2)  # (N, K, 1)
    return (-0.5 * (maha + log_det + d * math.log(2 * math.pi))).reshape(n, -1, h, w)


class GaussianMixtureAppearance(nn.Module):
    """Projection + class-conditional GMM: ``project``, ``update`` (estimate / online update), ``forward``.

    in_channels: C of the backbone map; dim: D of the projection (A-GAME: 2048 -> 512).
    distractors: 4 components (base + distractor per class) or 2 (the paper's "unimodal" ablation).
    update_rate: lambda of the online update. floor_init: initial raw floor (r = softplus(raw); the released
    code: -2, r = 0.127). prior_count: pseudo-count c of the estimate. output: ``"log_posterior"`` (default)
    or ``"log_joint"`` as the per-component map ``forward`` returns.
    """

    def __init__(self, in_channels: int, dim: int, distractors: bool = True, update_rate: float = 0.1,
                 floor_init: float = -2.0, prior_count: float = 0.1, output: str = "log_posterior") -> None:
        super().__init__()
        if output not in ("log_posterior", "log_joint"):
            raise ValueError(f"output must be log_posterior or log_joint, got {output!r}")
        if not 0.0 < update_rate <= 1.0 or prior_count < 0:
            raise ValueError(f"need 0 < update_rate <= 1 and prior_count >= 0, got {update_rate}, {prior_count}")
        self.num_components = 4 if distractors else 2
        self.update_rate, self.prior_count, self.output = update_rate, prior_count, output
        self.project = nn.Conv2d(in_channels, dim, 1)
        self.floor_raw = nn.Parameter(torch.full((self.num_components, dim), float(floor_init)))

    @property
    def floor(self) -> torch.Tensor:
        """(K, D) variance floor r_k = softplus(raw_k) > 0."""
        return F.softplus(self.floor_raw)

    def update(self, x: torch.Tensor, seg: torch.Tensor, state: Optional[GMMState] = None,
               rate: Optional[float] = None) -> GMMState:
        """Estimate the mixture from this frame and blend it into ``state``.

        x: (N, D, h, w) projected features; seg: (N, 2, h, w) soft base assignments [alpha_0 (background),
        alpha_1 (foreground)]; state None starts the video (lambda = 1), else ``rate`` (default
        ``update_rate``) is lambda. Returns the new state, (N, K, D) means and variances.
        """
        rate = 1.0 if state is None else (self.update_rate if rate is None else rate)
        floor = self.floor
        base = weighted_moments(x, seg, floor[:2], self.prior_count)
        if state is not None:
            base = blend(state.components(0, 2), base, rate)
        if self.num_components == 2:
            return base
        posterior = torch.softmax(diagonal_log_likelihood(x, base), dim=1)  # uniform prior cancels
        residual = F.relu(seg.float() - posterior)  # [alpha_2, alpha_3]
        distractor = weighted_moments(x, residual, floor[2:], self.prior_count)
        if state is not None:
            distractor = blend(state.components(2, 4), distractor, rate)
        return GMMState(torch.cat([base.mean, distractor.mean], 1), torch.cat([base.var, distractor.var], 1))

    def log_joint(self, x: torch.Tensor, state: GMMState) -> torch.Tensor:
        """(N, D, h, w) -> (N, K, h, w) s_k = log p(z = k) + log N(x | mu_k, Sigma_k)."""
        return diagonal_log_likelihood(x, state) - math.log(state.mean.shape[1])

    def forward(self, x: torch.Tensor, state: GMMState) -> torch.Tensor:
        """(N, D, h, w) projected features -> (N, K, h, w) per-component log posterior (or log joint)."""
        scores = self.log_joint(x, state)
        return torch.log_softmax(scores, dim=1) if self.output == "log_posterior" else scores
