"""Tiny models and batches for the pretraining tests (batch contract of selfvos.pretrain)."""
from __future__ import annotations

from typing import Dict

import pytest
import torch
import torch.nn.functional as F

from selfvos.backbones import BackboneConfig
from selfvos.pretrain import MuGConfig, MuGModel

torch.set_num_threads(2)


def tiny_batch(b: int = 2, t: int = 3, r: int = 2, size: int = 64, ref_size: int = 32, seed: int = 0) -> Dict[str, torch.Tensor]:
    """A translating textured square on a textured background: frames, soft pseudo-masks, references."""
    g = torch.Generator().manual_seed(seed)
    texture = F.avg_pool2d(torch.rand(b, 3, size * 2, size * 2, generator=g), 5, 1, 2)
    frames, masks = [], []
    side = size // 3
    for i in range(t + r):
        y0 = x0 = size // 6 + 3 * i
        frame = texture[:, :, i:i + size, 2 * i:2 * i + size].clone()
        mask = torch.zeros(b, 1, size, size)
        mask[:, :, y0:y0 + side, x0:x0 + side] = 0.9
        frame = frame * (1 - mask) + mask * texture[:, :, size:size + size, size:size + size].flip(-1)
        frames.append(frame)
        masks.append(mask)
    clip, clip_masks = torch.stack(frames[:t], 1), torch.stack(masks[:t], 1)
    refs = F.interpolate(torch.stack(frames[t:], 1).flatten(0, 1), size=ref_size, mode="bilinear", align_corners=False)
    ref_masks = F.interpolate(torch.stack(masks[t:], 1).flatten(0, 1), size=ref_size, mode="bilinear", align_corners=False)
    return {
        "frames": clip.clamp(0, 1),
        "pseudo_masks": clip_masks,
        "mask_valid": torch.ones(b, t, dtype=torch.bool),
        "refs": refs.reshape(b, r, 3, ref_size, ref_size).clamp(0, 1),
        "ref_masks": ref_masks.reshape(b, r, 1, ref_size, ref_size),
        "ref_valid": torch.ones(b, r, dtype=torch.bool),
        "video_index": torch.arange(b),
        "frame_indices": torch.arange(t).repeat(b, 1),
        "ref_indices": torch.arange(t, t + r).repeat(b, 1),
    }


def small_model(seed: int = 0, **overrides) -> MuGModel:
    torch.manual_seed(seed)
    cfg = MuGConfig(backbone=BackboneConfig(name="resnet18", output_stride=8, return_layers=("layer3",)),
                    embed_dim=32, key_dim=16, value_dim=32, regressor_grid=4, regressor_channels=32, **overrides)
    return MuGModel(cfg)


@pytest.fixture()
def batch() -> Dict[str, torch.Tensor]:
    return tiny_batch()


@pytest.fixture()
def model() -> MuGModel:
    return small_model()


def backbone_grad_ok(model: MuGModel) -> bool:
    """Every backbone parameter that was used got a finite gradient, and conv1's is non-zero."""
    grad = model.backbone.conv1.weight.grad
    return grad is not None and bool(torch.isfinite(grad).all()) and bool(grad.abs().sum() > 0)
