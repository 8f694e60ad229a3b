"""Edge-aware refinement of upsampled label probabilities: the fast guided filter (He & Sun, 2015).

Label propagation works on the stride-8 feature grid, so bilinear upsampling leaves object boundaries
blurred over ~8 px and placed where the grid cells were, not where the image edges are. The guided filter
(He, Sun & Tang, 2010) fits, in every ``(2r+1)^2`` window, each probability channel as a linear function of
the image colours, ``q = a * I + b`` (ridge ``eps`` on ``a``), and averages the fits: where the image has an
edge, the probability follows it; where the image is flat, the probability is smoothed. The fast variant
solves the fits on a grid ``subsample`` times coarser and upsamples the coefficients (cost ~1/subsample^2).

Chosen on DAVIS-2016 *train* one-shot (one sequence in three, GT used to choose only;
``benchmarks/davis16_train.py --task one-shot``): J&F 76.4 without, 78.1 with r = 16 px at the 480p working
size, eps = 1e-5, subsample 4 (eps 1e-4 scored 77.7 in the search).

>>> refine = GuidedRefiner(radius=16, eps=1e-5, subsample=4)
>>> probs = refine(image, probs)        # (1, 3, H, W) in [0, 1], (L, H, W) -> (L, H, W), still a distribution
"""
from __future__ import annotations

import torch


class GuidedRefiner:
    """probabilities (L, H, W) guided by the image (1, 3, H, W) in [0, 1] -> (L, H, W): negatives clipped, then
    renormalised over L (the filter is linear, so it keeps the channels summing to 1 up to that clip; the
    renormalisation never changes which channel is largest).

    radius: window radius r in pixels of the image given (0 disables the filter); eps: ridge on the local
    colour covariance, in squared [0, 1] colour units (smaller follows weaker edges); subsample: the fast
    guided filter's factor (1 = exact).
    """

    def __init__(self, radius: int = 16, eps: float = 1e-5, subsample: int = 4) -> None:
        if radius < 0 or eps <= 0 or subsample < 1:
            raise ValueError(f"guided refinement needs radius >= 0, eps > 0, subsample >= 1; got {radius}, {eps}, "
                             f"{subsample}")
        self.radius, self.eps, self.subsample = radius, eps, subsample

    @property
    def enabled(self) -> bool:
        return self.radius > 0

    def __call__(self, image: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return probs
        if image.shape[-2:] != probs.shape[-2:]:
            raise ValueError(f"image {tuple(image.shape)} and probabilities {tuple(probs.shape)} differ in size")
        from kornia.filters import guided_blur

        subsample = max(1, min(self.subsample, min(image.shape[-2:]) // 2))
        out = guided_blur(image.to(probs.device, torch.float32), probs[None].float(), 2 * self.radius + 1, self.eps,
                          border_type="replicate", subsample=subsample, separable=True)[0]
        out = out.clamp_min_(0)
        return out / out.sum(0, keepdim=True).clamp_min(1e-6)
