"""Training-only motion heads for the label-free motion objectives of the MuG recipe (SfM-Net, MOREL).

The frame head rho gives the object masks; what SfM-Net and MOREL also predict, the motion of each object and
of the camera between frames t and t+1, comes from :class:`MotionPredictor` on the backbone features of both
frames. It lives in the objective, not in the exported model: like a projection head of contrastive learning it
only serves training (it is trained and checkpointed with the objective, and left out of ``model/``).

Shapes: features (N, C, h, w) of frame t and of frame t+1, masks (N, K, h, w) in [0, 1] ->
object vectors (N, K, D) and a camera vector (N, D), D = 2 (MOREL translations, pixels) or 6 (SfM-Net rigid
motions: axis-angle rotation + translation).
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import nn


class MotionPredictor(nn.Module):
    """Masked pooling of a two-frame feature map -> one motion vector per object and one for the camera.

    ``conv(concat(phi_t, phi_t+1))`` is averaged inside each object mask (objects) and where no object is
    (``1 - max_k m_k``, the camera); a linear layer per kind maps the pooled features to D numbers, multiplied by
    ``scales`` (D,) so that unit outputs are motions of a useful size. The linear layers start at zero: at the
    start every object and the camera stand still.
    """

    def __init__(self, in_channels: int, out_dim: int, scales: Sequence[float], hidden: int = 128) -> None:
        super().__init__()
        if len(scales) != out_dim:
            raise ValueError(f"MotionPredictor: {len(scales)} scales for {out_dim} outputs")
        self.features = nn.Sequential(
            nn.Conv2d(2 * in_channels, hidden, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, kernel_size=3, padding=1), nn.ReLU(inplace=True))
        self.object_out = nn.Linear(hidden, out_dim)
        self.camera_out = nn.Linear(hidden, out_dim)
        for layer in (self.object_out, self.camera_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.register_buffer("scales", torch.tensor([float(s) for s in scales]), persistent=False)

    def forward(self, features_t: torch.Tensor, features_t1: torch.Tensor,
                masks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """features_t / features_t1 (N, C, h, w), masks (N, K, h, w) -> objects (N, K, D), camera (N, D)."""
        x = self.features(torch.cat([features_t, features_t1], dim=1))
        masks = masks.to(x.dtype)
        object_weights = masks / masks.sum(dim=(-2, -1), keepdim=True).clamp(min=1e-6)
        camera = 1.0 - masks.amax(dim=1)
        camera_weights = camera / camera.sum(dim=(-2, -1), keepdim=True).clamp(min=1e-6)
        pooled_objects = torch.einsum("nkhw,nchw->nkc", object_weights, x)
        pooled_camera = torch.einsum("nhw,nchw->nc", camera_weights, x)
        return self.object_out(pooled_objects) * self.scales, self.camera_out(pooled_camera) * self.scales
