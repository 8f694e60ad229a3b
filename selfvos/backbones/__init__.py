"""Backbones phi: dilated ResNets with torchvision-compatible names, created by name.

>>> net = create_backbone("resnet18", output_stride=8, return_layers=("layer3",))
>>> net(torch.zeros(1, 3, 128, 128))["layer3"].shape   # (1, 256, 16, 16)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, Tuple

from selfvos.backbones.resnet import ARCHITECTURES, LAYER_NAMES, ResNet
from selfvos.backbones.weights import load_backbone_weights
from selfvos.registry import BACKBONES


@dataclass
class BackboneConfig:
    """How to build phi.

    name: registered backbone (``resnet18 | resnet34 | resnet50``).
    output_stride: 8 or 16 (32 = plain ResNet).
    in_chans: 3 (RGB) or 1 (grey; 3-channel weights are summed over RGB when loaded).
    pretrained: None (random init), a local ``.safetensors`` path, or a Hub repo id with ``model.safetensors``.
    return_layers: feature maps ``forward`` returns, a subset of ``layer1..layer4``.
    """

    name: str = "resnet18"
    output_stride: int = 8
    in_chans: int = 3
    pretrained: Optional[str] = None
    return_layers: Tuple[str, ...] = LAYER_NAMES


def _make_builder(depth_name: str):
    def build(output_stride: int = 8, in_chans: int = 3, pretrained: Optional[str] = None,
              return_layers: Tuple[str, ...] = LAYER_NAMES) -> ResNet:
        model = ResNet(depth_name, output_stride=output_stride, in_chans=in_chans, return_layers=return_layers)
        if pretrained:
            load_backbone_weights(model, pretrained)
        return model

    build.__name__ = depth_name
    build.__doc__ = f"{depth_name} with configurable output stride, input channels and initial weights."
    return build


for _name in ARCHITECTURES:
    BACKBONES.register(_name)(_make_builder(_name))


def create_backbone(name: str = "resnet18", **cfg: Any) -> ResNet:
    """Build a registered backbone: ``create_backbone("resnet50", output_stride=16, in_chans=1)``."""
    return BACKBONES.create(name, **cfg)


def backbone_from_config(cfg: BackboneConfig) -> ResNet:
    """Build phi from a :class:`BackboneConfig`."""
    kwargs = dataclasses.asdict(cfg)
    return create_backbone(kwargs.pop("name"), **kwargs)


__all__ = ["BackboneConfig", "ResNet", "LAYER_NAMES", "create_backbone", "backbone_from_config",
           "load_backbone_weights"]
