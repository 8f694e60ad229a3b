"""MuGModel: the shared feature extractor phi and the small learnable parts the MuG objectives need.

* phi: a dilated ResNet (``selfvos.backbones``); its deepest returned layer is the feature map.
* rho: the frame mask head, a 1x1 conv C -> 1 giving a logit per feature cell (sigmoid lives in the loss).
* projection + co-attention weight W: ``x = normalize(conv1x1(phi))``, affinity ``A = x_i^T W x_j``.
* transform regressor: co-attention volume -> 6 affine parameters (``matching.py``).
* memory read: key/value attention over reference frames, fused with the query (``memory.py``).

Pure ``nn.Module``s, no I/O. Frames enter in [0, 1] and are normalised with the ImageNet mean/std here
(grey backbones see ITU-R 601 luminance), so torchvision/timm weights can initialise phi.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from selfvos.backbones import BackboneConfig, backbone_from_config
from selfvos.hub.mixin import SelfvosModelMixin, register_architecture
from selfvos.pretrain.matching import TransformRegressor
from selfvos.pretrain.memory import MemoryReader

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass
class MuGConfig:
    """Architecture of :class:`MuGModel`.

    backbone: phi; its deepest ``return_layers`` entry is the feature map every objective uses.
        Default: ResNet-18 at output stride 8, phi = layer3 (256 channels at 1/8), the layer that
        label propagation reads (CRW/VFS protocol, BRIEF 5). One training step then costs 41 GFLOP at
        128 px (batch 2, T=3, R=2 @ 64 px) against 141 GFLOP with phi = layer4 (the released MuG
        choice, ``return_layers=("layer4",)``), whose dilated 512-channel layer dominates.
    embed_dim: channels of the matching projection x = normalize(conv1x1(phi)).
    coattention_init_scale: W starts as ``scale * I`` so initial logits are scaled cosines in [-s, s].
    key_dim / value_dim: memory key and value channels.
    regressor_grid / regressor_channels: the co-attention for the transform regressor is computed on
        features pooled to a ``grid x grid`` map; width of its conv layers.
    """

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(return_layers=("layer3",)))
    embed_dim: int = 128
    coattention_init_scale: float = 10.0
    key_dim: int = 64
    value_dim: int = 256
    regressor_grid: int = 8
    regressor_channels: int = 128


@register_architecture
class MuGModel(SelfvosModelMixin, nn.Module):
    """phi + rho + matching projection/W + transform regressor + memory reader.

    ``save_pretrained(dir)`` / ``selfvos.from_pretrained(dir_or_repo_id)`` under architecture ``"mug"``.
    """

    architecture = "mug"

    def __init__(self, config: MuGConfig | None = None) -> None:
        super().__init__()
        self.config = config or MuGConfig()
        cfg = self.config
        self.backbone = backbone_from_config(cfg.backbone)
        self.feature_layer = self.backbone.return_layers[-1]
        channels = self.backbone.out_channels[self.feature_layer]
        self.feature_channels = channels
        self.feature_stride = self.backbone.strides[self.feature_layer]
        self.mask_head = nn.Conv2d(channels, 1, kernel_size=1)
        self.projection = nn.Conv2d(channels, cfg.embed_dim, kernel_size=1)
        self.coattention_weight = nn.Parameter(torch.eye(cfg.embed_dim) * cfg.coattention_init_scale)
        self.regressor = TransformRegressor(cfg.regressor_grid, cfg.regressor_channels)
        self.memory = MemoryReader(channels, cfg.key_dim, cfg.value_dim)
        in_chans = self.backbone.in_chans
        mean = IMAGENET_MEAN if in_chans == 3 else (sum(IMAGENET_MEAN) / 3,)
        std = IMAGENET_STD if in_chans == 3 else (sum(IMAGENET_STD) / 3,)
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, in_chans, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, in_chans, 1, 1), persistent=False)
        self.register_buffer("luma", torch.tensor(LUMA_WEIGHTS).view(1, 3, 1, 1), persistent=False)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """phi of every image, one backbone call: (B, N, 3, H, W) -> (B, N, C, h, w) (also (B, 3, H, W) -> (B, C, h, w))."""
        lead = images.shape[:-3]
        x = images.reshape(-1, *images.shape[-3:])
        if self.backbone.in_chans == 1 and x.shape[1] == 3:
            x = (x * self.luma).sum(dim=1, keepdim=True)
        x = (x - self.pixel_mean) / self.pixel_std
        if self.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)  # model moved to NHWC: feed NHWC
        feats = self.backbone(x)[self.feature_layer]
        return feats.reshape(*lead, *feats.shape[1:])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`encode`: the features phi(images)."""
        return self.encode(images)

    def frame_logits(self, features: torch.Tensor) -> torch.Tensor:
        """rho: (..., C, h, w) -> mask logits (..., 1, h, w)."""
        flat = features.reshape(-1, *features.shape[-3:])
        return self.mask_head(flat).reshape(*features.shape[:-3], 1, *features.shape[-2:])

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """Matching embedding, L2-normalised over channels: (B, C, h, w) -> (B, D, h, w)."""
        return F.normalize(self.projection(features), dim=1)

    def coattention(self, x_i: torch.Tensor, x_j: torch.Tensor) -> torch.Tensor:
        """Raw co-attention logits ``A = x_i^T W x_j``: (B, D, Hi, Wi), (B, D, Hj, Wj) -> (B, Hi*Wi, Hj*Wj)."""
        a = x_i.flatten(2).transpose(1, 2)  # (B, Ni, D)
        b = x_j.flatten(2)  # (B, D, Nj)
        return a @ self.coattention_weight @ b

    def regress_transform(self, x_src: torch.Tensor, x_dst: torch.Tensor) -> torch.Tensor:
        """Affine (normalised coords, src -> dst) between two embeddings: (B, D, h, w) x2 -> (B, 2, 3).

        Both maps are pooled to ``regressor_grid``; the co-attention ``A = x_src^T W x_dst`` is
        softmax-normalised column-wise (over src positions for every dst position) and reshaped to
        ``(B, G*G, G, G)`` (channels: src positions, spatial: dst grid) for the regressor.
        """
        g = self.config.regressor_grid
        src = F.normalize(F.adaptive_avg_pool2d(x_src, g), dim=1)
        dst = F.normalize(F.adaptive_avg_pool2d(x_dst, g), dim=1)
        attention = torch.softmax(self.coattention(src, dst), dim=1)  # (B, G*G src, G*G dst)
        return self.regressor(attention.reshape(-1, g * g, g, g))

    def read_memory(self, query: torch.Tensor, memory: torch.Tensor, memory_valid: torch.Tensor | None = None) -> torch.Tensor:
        """Memory-read mask logits: query (N, C, H, W), memory (N, K, C, h, w) -> (N, 1, H, W)."""
        return self.mask_head(self.memory(query, memory, memory_valid))

    def extra_repr(self) -> str:
        return f"feature_layer={self.feature_layer}, feature_stride={self.feature_stride}"

    def num_parameters(self) -> Dict[str, int]:
        """Parameter counts per part (for logs and model cards)."""
        parts = {"backbone": self.backbone, "mask_head": self.mask_head, "projection": self.projection,
                 "regressor": self.regressor, "memory": self.memory}
        counts = {name: sum(p.numel() for p in m.parameters()) for name, m in parts.items()}
        counts["coattention_weight"] = self.coattention_weight.numel()
        return counts
