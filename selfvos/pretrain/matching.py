"""Long-term granularity: co-attention matching of two frames of one video + a 6-DoF transform head.

Two frames X_i, X_j of a video (one of ``frames``, one of ``refs``, order drawn at random) give
embeddings x = normalize(conv1x1(phi)) and raw co-attention logits ``A = x_i^T W x_j`` (W learnable).

* Transform term (supervised by a KNOWN synthetic warp, the paper's supervision being unverified):
  a random affine M (rotation, isotropic scale, translation about the image centre, built with kornia's
  ``get_affine_matrix2d`` in X_j pixels) warps X_j into X_j'. The target is M in normalised coordinates,
  ``T = normalize_homography(M)[:2]`` (kornia, align_corners=True: pixel 0 -> -1, W-1 -> +1), which maps
  X_j coordinates to X_j' coordinates; X_j' is rendered at ``warp_size`` px by sampling X_j at T^-1
  (identical to ``kornia.geometry.transform.warp_affine(X_j, M)`` at equal size). The regressor reads the
  column-wise softmax of the co-attention of (X_j, X_j') and is trained with MSE on the 6 parameters.
* Consistency term (makes features of the same video match): a round trip on the co-attention of
  (X_i, X_j). ``P(j|i) = softmax_rows(A)``, ``P(i|j) = softmax_columns(A)``; walking from the smaller map
  through the other and back must return home: ``-mean log diag(P_there P_back)`` (contrastive random
  walk, one softmax per direction on the raw logits).
``L_matching = transform_weight * MSE + consistency_weight * round_trip``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from selfvos.pretrain.model import MuGModel


@dataclass
class MatchingConfig:
    max_rotation: float = 15.0  # degrees
    max_scale: float = 0.15  # scale drawn from [1 - s, 1 + s]
    max_translation: float = 0.15  # fraction of the image side
    warp_size: int = 64  # side of the rendered X_j' (px); normalised coordinates make T size-free
    transform_weight: float = 1.0
    consistency_weight: float = 1.0


class TransformRegressor(nn.Module):
    """Co-attention volume (B, G*G, G, G) -> affine (B, 2, 3); starts at the identity transform."""

    IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)

    def __init__(self, grid: int = 8, channels: int = 128) -> None:
        super().__init__()
        self.grid = grid
        self.features = nn.Sequential(
            nn.Conv2d(grid * grid, channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels // 2, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(channels // 2 * grid * grid, 6)
        nn.init.zeros_(self.fc.weight)
        with torch.no_grad():
            self.fc.bias.copy_(torch.tensor(self.IDENTITY))

    def forward(self, attention: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(attention).flatten(1)).reshape(-1, 2, 3)


def sample_affine(batch: int, size: Tuple[int, int], cfg: MatchingConfig, device: torch.device | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Random pixel affine (B, 3, 3) for images of ``size`` (H, W), via kornia ``get_affine_matrix2d``."""
    from kornia.geometry.transform import get_affine_matrix2d

    h, w = size
    u = torch.rand(batch, 4, generator=generator).to(device) * 2 - 1  # uniform in [-1, 1]
    angle = u[:, 0] * cfg.max_rotation
    scale = (1 + u[:, 1] * cfg.max_scale)[:, None].expand(-1, 2).contiguous()
    translations = u[:, 2:] * cfg.max_translation * torch.tensor([w, h], dtype=u.dtype, device=device)
    center = torch.tensor([[(w - 1) / 2, (h - 1) / 2]], dtype=u.dtype, device=device).expand(batch, -1).contiguous()
    return get_affine_matrix2d(translations, center, scale, angle)


def normalized_affine(pixel_affine: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Pixel affine (B, 3, 3) of an (H, W) image -> the same map in normalised coordinates (B, 3, 3)."""
    from kornia.geometry.conversions import normalize_homography

    return normalize_homography(pixel_affine, size, size)


def warp_normalized(images: torch.Tensor, transform: torch.Tensor, out_size: Tuple[int, int]) -> torch.Tensor:
    """Warp (B, C, H, W) by a normalised affine (B, 2, 3) or (B, 3, 3) (src -> dst) into (B, C, *out_size)."""
    full = transform if transform.shape[-2] == 3 else torch.cat(
        [transform, transform.new_tensor([0.0, 0.0, 1.0]).expand(transform.shape[0], 1, 3)], dim=1)
    inverse = torch.linalg.inv(full)[:, :2]  # dst -> src: where each output pixel samples the input
    grid = F.affine_grid(inverse, [images.shape[0], images.shape[1], *out_size], align_corners=True)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def round_trip_loss(logits: torch.Tensor) -> torch.Tensor:
    """Round-trip NLL on raw co-attention logits (B, Ni, Nj), walking from the smaller side -> scalar."""
    rows = torch.softmax(logits, dim=2)  # P(j | i)
    cols = torch.softmax(logits, dim=1)  # P(i | j), column-wise
    if logits.shape[1] <= logits.shape[2]:
        walk = rows @ cols.transpose(1, 2)  # (B, Ni, Ni): i -> j -> i
    else:
        walk = cols.transpose(1, 2) @ rows  # (B, Nj, Nj): j -> i -> j
    return -torch.diagonal(walk, dim1=1, dim2=2).clamp_min(1e-12).log().mean()


class CoAttentionMatching(nn.Module):
    """Long-term objective: transform regression on a known warp + round-trip consistency."""

    def __init__(self, config: MatchingConfig | None = None) -> None:
        super().__init__()
        self.config = config or MatchingConfig()

    def forward(self, model: "MuGModel", frames: torch.Tensor, frame_features: torch.Tensor,
                refs: torch.Tensor | None = None, ref_features: torch.Tensor | None = None) -> Dict[str, torch.Tensor]:
        """frames (B, T, 3, H, W) + their phi (B, T, C, h, w); refs (B, R, 3, H', W') + phi, optional.

        Returns ``{"loss", "transform", "consistency"}`` (scalars; the parts unweighted).
        """
        cfg = self.config
        b, t = frames.shape[:2]
        rows = torch.arange(b, device=frames.device)
        ti = torch.randint(0, t, (b,), device=frames.device)
        a_img, a_feat = frames[rows, ti], frame_features[rows, ti]
        if refs is not None and ref_features is not None and refs.shape[1] > 0:
            rj = torch.randint(0, refs.shape[1], (b,), device=frames.device)
            b_img, b_feat = refs[rows, rj], ref_features[rows, rj]
        else:  # no references: a second, different frame of the clip
            tj = (ti + torch.randint(1, t, (b,), device=frames.device)) % t
            b_img, b_feat = frames[rows, tj], frame_features[rows, tj]
        if torch.rand(()) < 0.5:
            a_img, a_feat, b_img, b_feat = b_img, b_feat, a_img, a_feat
        x_i, x_j = model.embed(a_feat), model.embed(b_feat)
        consistency = round_trip_loss(model.coattention(x_i, x_j))

        size = tuple(b_img.shape[-2:])
        target = normalized_affine(sample_affine(b, size, cfg, frames.device), size)[:, :2]
        warped = warp_normalized(b_img, target, (cfg.warp_size, cfg.warp_size))
        x_warped = model.embed(model.encode(warped))
        predicted = model.regress_transform(x_j, x_warped)
        transform = F.mse_loss(predicted, target)
        loss = cfg.transform_weight * transform + cfg.consistency_weight * consistency
        return {"loss": loss, "transform": transform, "consistency": consistency}
