"""Backbones phi: dilated ResNets with torchvision-compatible names, created by name.

>>> net = create_backbone("resnet18", output_stride=8, return_layers=("layer3",))
>>> net(torch.zeros(1, 3, 128, 128))["layer3"].shape   # (1, 256, 16, 16)
>>> net.save_pretrained("out/phi"); selfvos.from_pretrained("out/phi")   # a ResNetBackbone again

Every backbone built here is a :class:`ResNetBackbone`: a ``ResNet`` that carries its
:class:`BackboneConfig` and the Hub mixin (architecture ``"resnet"``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, Tuple

from selfvos.backbones.resnet import ARCHITECTURES, LAYER_NAMES, ResNet
from selfvos.backbones.weights import load_backbone_weights
from selfvos.hub.mixin import SelfvosModelMixin, building_from_checkpoint, register_architecture
from selfvos.registry import BACKBONES


@dataclass
class BackboneConfig:
    """How to build phi.

    name: registered backbone (``resnet18 | resnet34 | resnet50 | resnet101``).
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


@register_architecture
class ResNetBackbone(SelfvosModelMixin, ResNet):
    """A :class:`ResNet` built from a :class:`BackboneConfig`, savable with ``save_pretrained``.

    ``forward``: (B, in_chans, H, W) -> ``{layer: (B, C_layer, H / stride, W / stride)}`` as ``ResNet``.
    ``config.pretrained`` initialises the weights at construction, except while ``from_pretrained``
    builds the model for a strict load (the checkpoint overwrites every weight, and the initial file may
    not exist on the loading machine).
    """

    architecture = "resnet"

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__(config.name, output_stride=config.output_stride, in_chans=config.in_chans,
                         return_layers=config.return_layers)
        self.config = config
        if config.pretrained and not building_from_checkpoint():
            load_backbone_weights(self, config.pretrained)


def _make_builder(depth_name: str):
    def build(output_stride: int = 8, in_chans: int = 3, pretrained: Optional[str] = None,
              return_layers: Tuple[str, ...] = LAYER_NAMES) -> ResNetBackbone:
        return ResNetBackbone(BackboneConfig(name=depth_name, output_stride=output_stride, in_chans=in_chans,
                                             pretrained=pretrained, return_layers=tuple(return_layers)))

    build.__name__ = depth_name
    build.__doc__ = f"{depth_name} with configurable output stride, input channels and initial weights."
    return build


for _name in ARCHITECTURES:
    BACKBONES.register(_name)(_make_builder(_name))


def create_backbone(name: str = "resnet18", **cfg: Any) -> ResNetBackbone:
    """Build a registered backbone: ``create_backbone("resnet50", output_stride=16, in_chans=1)``."""
    return BACKBONES.create(name, **cfg)


def backbone_from_config(cfg: BackboneConfig) -> ResNetBackbone:
    """Build phi from a :class:`BackboneConfig`."""
    kwargs = dataclasses.asdict(cfg)
    return create_backbone(kwargs.pop("name"), **kwargs)


__all__ = ["BackboneConfig", "ResNet", "ResNetBackbone", "LAYER_NAMES", "create_backbone", "backbone_from_config",
           "load_backbone_weights"]
