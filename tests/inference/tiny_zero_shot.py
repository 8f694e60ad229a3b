"""A tiny zero-shot head for the platform tests (registered as ``_test_zero_shot``; names starting with ``_``
are skipped by the registry-wide head test): per frame, ``logits_t = head([conv(frame_t), flow_t / diag])``,
so its output at frame t depends on frame t and its flow only (window-independent), and it reads flows."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Dict

import torch
from torch import nn

from selfvos.heads.base import HeadConfig, VOSHead, segmentation_online_loss
from selfvos.hub.mixin import ModelInfo, register_architecture
from selfvos.inference.video_core import ZeroShotHeadInference, video_head_core
from selfvos.registry import CORES, ONLINE_LOSSES

ARCH = "_test_zero_shot"


class TinyTrunk(nn.Module):
    """A stand-in backbone (``conv1`` makes ``VOSHead.backbones`` list it): (N, 3, H, W) -> (N, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv1(x))


@HeadConfig.register_subclass(ARCH)
@dataclass
class TinyZeroShotConfig(HeadConfig):
    channels: int = 4
    inference: ZeroShotHeadInference = field(default_factory=ZeroShotHeadInference)


@register_architecture
class TinyZeroShot(VOSHead):
    architecture = ARCH
    tasks = ("zero-shot",)
    needs_flow: ClassVar[bool] = True
    info = ModelInfo(summary="platform test head", papers=())

    def __init__(self, config: TinyZeroShotConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = TinyTrunk(config.channels)
        self.head = nn.Conv2d(config.channels + 2, 2, 3, padding=1)

    def forward(self, batch: Dict[str, torch.Tensor], offline: bool = True) -> Dict[str, torch.Tensor]:
        frames = batch["frames"]
        b, t, _, h, w = frames.shape
        features = self.backbone(self.normalize(frames.flatten(0, 1)))
        flows = batch.get("flows")
        flows = torch.zeros(b * t, 2, h, w, device=frames.device) if flows is None else flows.flatten(0, 1)
        flows = flows / (h * h + w * w) ** 0.5
        logits = self.head(torch.cat([features, flows], dim=1)).view(b, t, 2, h, w)
        return {"logits": logits, "frames": torch.arange(t, device=frames.device)}


CORES.register(ARCH)(video_head_core)
ONLINE_LOSSES.register(ARCH)(segmentation_online_loss)
