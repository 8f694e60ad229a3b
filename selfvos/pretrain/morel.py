"""MOREL-style objective (Goel, Weng and Poupart, NeurIPS 2018, "Unsupervised Video Object Segmentation for
Deep Reinforcement Learning"): K object masks and one 2D translation per object explain frame t+1.

Structure from motion "lite" (the paper's simplification of SfM-Net, released code
``unsupervised_object_segmentation/object_segmentation_network.py``):

    F(p) = sum_k m_k(p) t_k  (+ c, an optional camera translation shared by every pixel)

with masks m (B, K, H, W) in [0, 1] (the paper: per-channel sigmoids, so a pixel may belong to several objects
or to none) and translations t (B, K, 2) in pixels (dx, dy). The released code predicts t in units of
``flow_c * (H, W)``; here the head's output is taken as pixels and any scaling belongs to the head.

Losses (``frame_t_hat = backward_warp(frame_t1, F)``, which with the true flow reconstructs frame t):

- photometric: ``mean_p rho(frame_t, frame_t_hat)`` with rho = DSSIM ``(1 - SSIM) / 2`` (the released code's
  choice; SSIM here over 3 x 3 mean windows, as in per-pixel photometric losses, where ``tf.image.ssim`` uses an
  11 x 11 Gaussian window) or L1 averaged over channels;
- sparsity: L1 on the masks, ``sparsity_on="mask"``: ``mean_{b,k,p} m_k(p)``, or by default the released code's
  form ``sparsity_on="flow"``: ``mean_{b,k,c,p} |m_k(p) t_k,c|`` (the masks' L1 weighted by each object's motion).
  Default "flow" because only the product m_k t_k is observed: the plain mask L1 keeps lowering m_k while t_k
  grows to compensate (on the synthetic test clip it ends with masks near 0.7 and translations 1.35x too long),
  where the flow-weighted form is indifferent to that trade. The released code ramps the weight linearly
  from 0 over the first 1e5 steps (weight 1.0 there); a schedule belongs to the recipe, not to this module;
- optional flow smoothness: ``mean |dF/dx| + mean |dF/dy|`` (first-order L1, as SfM-Net).

``loss = photometric_weight * photometric + sparsity_weight * sparsity + smooth_flow_weight * smooth_flow``; the
per-term values returned beside it are unweighted and detached (the convention of ``MuGObjective``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from selfvos.layers.warp import backward_warp

PHOTOMETRIC = ("dssim", "l1")
SPARSITY_ON = ("mask", "flow")


@dataclass
class MORELConfig:
    """Weights and choices of :class:`MORELObjective`."""

    photometric: str = "dssim"  # "dssim" ((1 - SSIM) / 2, the released code) or "l1"
    photometric_weight: float = 1.0
    sparsity_on: str = "flow"  # "flow": mean |m_k t_k| (released code); "mask": mean m (L1 on the masks alone)
    sparsity_weight: float = 0.01
    smooth_flow_weight: float = 0.0  # first-order L1 smoothness of F


def translation_flow(masks: torch.Tensor, translations: torch.Tensor,
                     camera: torch.Tensor | None = None) -> torch.Tensor:
    """``F = sum_k m_k t_k (+ camera)``: masks (B, K, H, W), translations (B, K, 2) pixels (dx, dy), camera
    (B, 2) or None -> flow (B, 2, H, W) pixels."""
    flow = torch.einsum("bkhw,bkc->bchw", masks, translations.to(masks.dtype))
    if camera is not None:
        flow = flow + camera.to(flow.dtype)[:, :, None, None]
    return flow


def window_mean(image: torch.Tensor) -> torch.Tensor:
    """3 x 3 box mean of (B, C, H, W), reflection padded -> (B, C, H, W)."""
    return F.avg_pool2d(F.pad(image, (1, 1, 1, 1), mode="reflect"), 3, 1)


def ssim_map(x: torch.Tensor, y: torch.Tensor, c1: float = 0.01 ** 2, c2: float = 0.03 ** 2) -> torch.Tensor:
    """Per-pixel SSIM of images (B, C, H, W) in [0, 1] over 3 x 3 mean windows (reflection padded) -> (B, C, H, W).

    ``SSIM = (2 mu_x mu_y + c1) (2 cov + c2) / ((mu_x^2 + mu_y^2 + c1) (var_x + var_y + c2))``, the five window
    means computed in one pooling call.
    """
    mu_x, mu_y, xx, yy, xy = window_mean(torch.cat([x, y, x * x, y * y, x * y], dim=1)).chunk(5, dim=1)
    var_x, var_y, cov = xx - mu_x ** 2, yy - mu_y ** 2, xy - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    denominator = (mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2)
    return numerator / denominator


def photometric_map(frame_t: torch.Tensor, frame_t1: torch.Tensor, flow: torch.Tensor,
                    kind: str = "l1") -> torch.Tensor:
    """Per-pixel error between frame t and frame t+1 warped back with ``flow``.

    frame_t, frame_t1 (B, C, H, W) in [0, 1], flow (B, 2, H, W) pixels -> (B, 1, H, W): the channel mean of
    ``|frame_t - backward_warp(frame_t1, flow)|`` ("l1") or of ``clamp((1 - SSIM) / 2, 0, 1)`` ("dssim").
    """
    if kind not in PHOTOMETRIC:
        raise ValueError(f"photometric must be one of {PHOTOMETRIC}, got {kind!r}")
    warped = backward_warp(frame_t1, flow.to(frame_t1.dtype))
    if kind == "l1":
        error = (frame_t - warped).abs()
    else:
        error = ((1.0 - ssim_map(frame_t, warped)) / 2.0).clamp(0.0, 1.0)
    return error.mean(dim=1, keepdim=True)


def smoothness_l1(field: torch.Tensor) -> torch.Tensor:
    """First-order smoothness of a map (B, C, H, W): ``mean |f(x+1) - f(x)| + mean |f(y+1) - f(y)|`` -> scalar."""
    dx = (field[..., :, 1:] - field[..., :, :-1]).abs().mean()
    dy = (field[..., 1:, :] - field[..., :-1, :]).abs().mean()
    return dx + dy


def mask_sparsity(masks: torch.Tensor, translations: torch.Tensor, on: str = "mask") -> torch.Tensor:
    """L1 sparsity: ``mean m`` ("mask") or ``mean |m_k t_k|`` over (B, K, 2, H, W) ("flow"); masks (B, K, H, W),
    translations (B, K, 2) -> scalar."""
    if on == "mask":
        return masks.mean()
    if on == "flow":
        return (masks.unsqueeze(2) * translations.to(masks.dtype)[..., None, None]).abs().mean()
    raise ValueError(f"sparsity_on must be one of {SPARSITY_ON}, got {on!r}")


class MORELObjective(nn.Module):
    """Masks + per-object translations reconstruct frame t from frame t+1 by warping; see the module docstring."""

    def __init__(self, config: MORELConfig | None = None) -> None:
        super().__init__()
        self.config = config or MORELConfig()
        if self.config.photometric not in PHOTOMETRIC:
            raise ValueError(f"photometric must be one of {PHOTOMETRIC}, got {self.config.photometric!r}")
        if self.config.sparsity_on not in SPARSITY_ON:
            raise ValueError(f"sparsity_on must be one of {SPARSITY_ON}, got {self.config.sparsity_on!r}")

    def forward(self, masks: torch.Tensor, translations: torch.Tensor, frame_t: torch.Tensor,
                frame_t1: torch.Tensor, camera: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """masks (B, K, H, W) in [0, 1], translations (B, K, 2) pixels, frame_t / frame_t1 (B, C, H, W) in [0, 1]
        at the masks' resolution, camera (B, 2) pixels or None.

        Returns ``loss`` (scalar, with gradient), ``photometric``, ``sparsity``, ``smooth_flow`` (unweighted,
        detached) and ``flow`` (B, 2, H, W, detached).
        """
        cfg = self.config
        if frame_t.shape[-2:] != masks.shape[-2:] or frame_t1.shape[-2:] != masks.shape[-2:]:
            raise ValueError(f"frames {tuple(frame_t.shape)} / {tuple(frame_t1.shape)} must match masks "
                             f"{tuple(masks.shape)} in H, W")
        flow = translation_flow(masks, translations, camera)
        photometric = photometric_map(frame_t, frame_t1, flow, cfg.photometric).mean()
        sparsity = mask_sparsity(masks, translations, cfg.sparsity_on)
        smooth = smoothness_l1(flow) if cfg.smooth_flow_weight else flow.new_zeros(())
        loss = cfg.photometric_weight * photometric + cfg.sparsity_weight * sparsity + cfg.smooth_flow_weight * smooth
        return {"loss": loss, "photometric": photometric.detach(), "sparsity": sparsity.detach(),
                "smooth_flow": smooth.detach(), "flow": flow.detach()}
