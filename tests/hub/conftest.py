"""Models for the hub tests: small test models (nested typed configs, BatchNorm buffers, tied weights) that
exercise the mixin itself, and the real default MuG model with non-default weights."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

import pytest
import torch
from torch import nn

from selfvos.hub import SelfvosModelMixin, register_architecture


@dataclass
class EncoderConfig:
    channels: Tuple[int, ...] = (4, 8)
    kernel_size: int = 3


@dataclass
class TinyConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    num_classes: int = 2
    temperature: float = 0.5
    note: Optional[str] = None
    tie_heads: bool = True


@register_architecture
class TinySegmenter(SelfvosModelMixin, nn.Module):
    """(B, 3, H, W) -> logits (B, num_classes, H, W); ``aux_head`` shares ``head``'s weight when tied."""

    architecture = "test-tiny-segmenter"

    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.config = config
        layers, in_ch = [], 3
        for ch in config.encoder.channels:
            layers += [nn.Conv2d(in_ch, ch, config.encoder.kernel_size, padding="same"), nn.BatchNorm2d(ch), nn.ReLU()]
            in_ch = ch
        self.encoder = nn.Sequential(*layers)
        self.head = nn.Conv2d(in_ch, config.num_classes, 1)
        self.aux_head = nn.Conv2d(in_ch, config.num_classes, 1)
        if config.tie_heads:
            self.aux_head.weight = self.head.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        return (self.head(feats) + self.aux_head(feats)) / self.config.temperature


@dataclass
class TaggerConfig:
    num_tags: int = 3


@register_architecture
class TinyTagger(SelfvosModelMixin, nn.Module):
    """(B, 5) -> (B, num_tags); its config class is given by ``config_class``."""

    architecture = "test-tiny-tagger"
    config_class = TaggerConfig

    def __init__(self, config) -> None:  # no hint on purpose: config_class names the dataclass
        super().__init__()
        self.config = config
        self.linear = nn.Linear(5, config.num_tags)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def trained_segmenter(config: Optional[TinyConfig] = None, seed: int = 0) -> TinySegmenter:
    """A segmenter with non-default weights and BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = TinySegmenter(config or TinyConfig(encoder=EncoderConfig(channels=(4, 6, 8)), note="unit test"))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.train()
    model(torch.rand(4, 3, 16, 16))  # moves BatchNorm running statistics away from their defaults
    return model.eval()


@pytest.fixture
def segmenter() -> TinySegmenter:
    return trained_segmenter()


@pytest.fixture
def checkpoint(tmp_path, segmenter):
    """A saved checkpoint directory of ``segmenter``."""
    return segmenter.save_pretrained(tmp_path / "ckpt")


@pytest.fixture
def hub_classes():
    return {"segmenter": TinySegmenter, "tagger": TinyTagger, "config": TinyConfig, "encoder": EncoderConfig,
            "tagger_config": TaggerConfig, "trained_segmenter": trained_segmenter}


def trained_mug():
    """The real default ``MuGModel(MuGConfig())`` with perturbed weights and BatchNorm statistics, in eval mode."""
    from selfvos.pretrain import MuGConfig, MuGModel

    torch.manual_seed(0)
    model = MuGModel(MuGConfig())
    with torch.no_grad():
        model.coattention_weight.add_(torch.randn_like(model.coattention_weight))
        model.mask_head.bias.fill_(0.25)
    model.train()
    model.encode(torch.rand(2, 3, 48, 48))  # moves backbone BatchNorm running statistics
    return model.eval()


@pytest.fixture(scope="session")
def mug_model():
    """Shared by several tests: never modify it (save it and edit the copy)."""
    torch.set_num_threads(2)
    return trained_mug()


@pytest.fixture
def mug_checkpoint(tmp_path, mug_model):
    """A saved checkpoint directory of ``mug_model``."""
    return mug_model.save_pretrained(tmp_path / "mug")
