"""A tiny model, objective and clip dataset that follow the pretraining batch contract, so the engine
is tested without the MuG model or the clip sampler. Imported by the engine tests and the DDP worker."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from selfvos.engine import TrainConfig
from selfvos.hub import SelfvosModelMixin, register_architecture


class ToyClips(Dataset):
    """``n`` random clips of ``T`` frames (+ ``R`` refs) at ``size`` px; item ``i`` depends only on (seed, i).

    The pseudo-mask is a fixed function of the frame (bright, red-dominant pixels), so it can be learned.
    """

    def __init__(self, n: int = 16, T: int = 3, R: int = 1, size: int = 16, seed: int = 0) -> None:
        self.n, self.T, self.R, self.size, self.seed = n, T, R, size, seed

    def __len__(self) -> int:
        return self.n

    def _mask(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(12.0 * (frames[:, :1] - frames[:, 1:2] + 0.1 * (frames.mean(1, keepdim=True) - 0.5)))

    def __getitem__(self, i: int) -> Dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + i)
        frames = torch.rand(self.T, 3, self.size, self.size, generator=g)
        refs = torch.rand(self.R, 3, self.size, self.size, generator=g)
        return {
            "frames": frames,
            "pseudo_masks": self._mask(frames),
            "mask_valid": torch.ones(self.T, dtype=torch.bool),
            "refs": refs,
            "ref_masks": self._mask(refs),
            "ref_valid": torch.ones(self.R, dtype=torch.bool),
            "video_index": torch.tensor(i, dtype=torch.int64),
            "frame_indices": torch.arange(self.T, dtype=torch.int64),
            "ref_indices": torch.arange(self.R, dtype=torch.int64) + self.T,
        }


@dataclass
class ToyConfig:
    """What :class:`ToyModel` is built from (saved in its config.json)."""

    width: int = 8
    norm: str = "group"  # group | batch
    unused: bool = False  # add a parameter that never gets a gradient (DDP find_unused_parameters)


@register_architecture
class ToyModel(SelfvosModelMixin, nn.Module):
    """``backbone`` (conv + norm) and a 1x1 ``head``: (N, 3, H, W) -> logits (N, 1, H, W).

    A registered test architecture, so ``Trainer.export`` and ``selfvos.from_pretrained`` work on it.
    """

    architecture = "test-engine-toy"

    def __init__(self, config: Optional[ToyConfig] = None) -> None:
        super().__init__()
        self.config = config = config or ToyConfig()
        width = config.width
        norm = nn.GroupNorm(2, width) if config.norm == "group" else nn.BatchNorm2d(width)
        self.backbone = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), norm, nn.ReLU())
        self.head = nn.Conv2d(width, 1, 1)
        if config.unused:
            self.unused = nn.Parameter(torch.zeros(width))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(frames))


class ToyObjective(nn.Module):
    """Masked BCE of ``model`` on every clip frame against its pseudo-mask, times a learnable logit scale.

    ``drop > 0`` drops a random fraction of frames (model-side randomness, to test exact resume).
    """

    def __init__(self, drop: float = 0.0) -> None:
        super().__init__()
        self.drop = drop
        self.logit_scale = nn.Parameter(torch.ones(()))

    def forward(self, model: nn.Module, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        B, T = batch["frames"].shape[:2]
        logits = model(batch["frames"].flatten(0, 1)) * self.logit_scale  # (B*T, 1, H, W)
        target = batch["pseudo_masks"].flatten(0, 1)
        weight = batch["mask_valid"].flatten().float()
        if self.drop > 0:
            weight = weight * (torch.rand(B * T) >= self.drop).float()
            weight[0] = 1.0
        per_frame = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean((1, 2, 3))
        loss = (per_frame * weight).sum() / weight.sum()
        return {"loss": loss, "frame_loss": per_frame.mean().detach()}


def toy_config(tmp: Path, **overrides) -> TrainConfig:
    """A fast CPU config writing into ``tmp`` with tracking off unless asked for."""
    values = dict(
        max_steps=6, batch_size=4, lr=1e-2, weight_decay=1e-4, warmup_steps=1, mixed_precision="no",
        output_dir=str(tmp), tracking_uri=None, log_every=1, grad_clip=1.0,
    )
    values.update(overrides)
    return TrainConfig(**values)


def make_parts(seed: int = 0, drop: float = 0.0, n: int = 16, config: Optional[ToyConfig] = None):
    """Model, objective and dataset with identical initial weights for a given seed."""
    torch.manual_seed(seed)
    return ToyModel(config), ToyObjective(drop), ToyClips(n=n)


def flat_weights(module: nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def reset_accelerate_state() -> None:
    """Forget the Accelerator singletons, so each test builds its Accelerator from scratch."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
