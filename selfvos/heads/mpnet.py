"""MP-Net: learning motion patterns in videos (Tokmakov, Alahari and Schmid, CVPR 2017), a zero-shot head.

MP-Net labels every pixel of frame t as moving independently (foreground) or static / moving only with the camera
(background) from the optical flow between frames t and t+1 alone: a fully convolutional encoder-decoder on the
flow field. Frame t's prediction depends on ``flows[:, t]`` only (and on frame t with ``appearance``), so the head
is causal by construction and ``offline`` changes nothing.

Network (``MPNet``, architecture ``"mpnet"``), per frame, input (N, 2, H, W) flow (dx, dy) in pixels:

- motion input (``motion_input``), resolution invariant: ``f~ = f / sqrt(H^2 + W^2)`` (the displacement as a
  fraction of the image diagonal) and ``m = ||f~||``; ``flow_input: vector`` gives ``g * (f~_x, f~_y, m)``,
  ``flow_input: angle`` gives the paper's angle field with the magnitude, ``(f~_x / max(m, eps), f~_y / max(m,
  eps), g * m)`` with ``eps = 1e-3`` (about half a pixel at 240p: below it the unit vector fades to 0 rather than
  amplifying flow noise). ``g = flow_gain`` (20: a motion of 5% of the diagonal reads 1). Doubling the image
  size and the flow leaves this input unchanged (nearest-neighbour upsampled).
- encoder: 4 levels, each a 3x3 convolution + GroupNorm + ReLU then a 2x2 max-pooling (ceil mode), widths
  ``channels`` at 1/2, 1/4, 1/8, 1/16 (the first convolution has no norm, so the absolute flow size survives);
- decoder, as the paper's, from 1/16 to 1/4 with skip connections: ``d16 = conv(e16)``; ``d8 = conv([up(d16),
  e8])``; ``d4 = conv([up(d8), e4])`` (3x3 convolution + GroupNorm + ReLU, ``decoder_dim`` channels, ``up`` =
  bilinear x2 to the skip's size); a 1x1 convolution gives the (background, foreground) logits at 1/4, which are
  bilinearly upsampled to the input size as in the paper.
- ``appearance: true`` (our platform's option, not the paper's network): the shared pretrained backbone (ResNet-18
  at output stride 16, ``self.backbone``) runs on the ImageNet-normalised RGB frame t, and its layer3 / layer2 /
  layer1 features, each reduced by a 1x1 convolution + ReLU to ``appearance_dim`` channels, are concatenated
  into the decoder at 1/16 / 1/8 / 1/4: ``d16 = conv([e16, a16])``, ``d8 = conv([up(d16), e8, a8])``,
  ``d4 = conv([up(d8), e4, a4])``. The paper combines appearance only after training, as a post-hoc product of
  the motion probability with an objectness map from object proposals (then a CRF); here the fusion is learned
  end to end instead. With ``appearance: false`` the model has NO backbone (``backbones()`` is empty), so a
  pretrained ``--init`` has nothing to fill.

GroupNorm (groups = gcd(channels, 8)) keeps the frames of a batch independent in training mode as well.

Reduced versus the paper so that one training step on 4 clips x 4 frames at 192x320 takes about a second on 2
CPU cores: encoder widths ``channels`` (32, 64, 128, 256) and decoder width 64, one convolution per level (the
paper's encoder-decoder is wider). The paper upsamples by learned up-convolutions; here
bilinear upsampling + convolution (size-robust for inputs that are not multiples of 16). The paper trains on
synthetic FlyingThings3D with ground-truth flow and a binary cross-entropy; the platform's recipe fine-tunes on
DAVIS-2016 with estimated flow and the 2-class cross-entropy (the same objective on 2 logits).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from selfvos.backbones import BackboneConfig, backbone_from_config
from selfvos.heads.base import HeadConfig, VOSHead, segmentation_online_loss
from selfvos.hub.mixin import ModelInfo, register_architecture
from selfvos.inference.video_core import ZeroShotHeadInference, video_head_core
from selfvos.registry import CORES, ONLINE_LOSSES
from selfvos.layers.two_stream import normalize_flow

FLOW_INPUTS = ("vector", "angle")
ANGLE_EPS = 1e-3  # |f~| below which the angle field's unit vector fades to 0 (fraction of the diagonal)
APPEARANCE_LAYERS = ("layer3", "layer2", "layer1")  # fed into the decoder at 1/16, 1/8, 1/4


@HeadConfig.register_subclass("mpnet")
@dataclass
class MPNetConfig(HeadConfig):
    """Architecture of :class:`MPNet` (defaults: CPU-sized, see the module docstring).

    backbone: the appearance trunk (ResNet at output stride 16 returning layer1..layer3); built only when
        ``appearance`` is true.
    appearance: concatenate the backbone's RGB features of frame t into the decoder (not in the paper).
    flow_input: ``vector`` = (dx, dy, magnitude) / diagonal; ``angle`` = the paper's angle field (unit flow
        direction) + magnitude / diagonal.
    flow_gain: multiplies the diagonal-normalised flow and magnitude (20: 5% of the diagonal reads 1).
    channels: encoder widths at 1/2, 1/4, 1/8, 1/16 (4 levels).
    decoder_dim: decoder width at 1/16, 1/8, 1/4. appearance_dim: each reduced backbone layer.
    """

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(
        name="resnet18", output_stride=16, return_layers=("layer1", "layer2", "layer3")))
    appearance: bool = False
    flow_input: str = "vector"
    flow_gain: float = 20.0
    channels: Tuple[int, ...] = (32, 64, 128, 256)
    decoder_dim: int = 64
    appearance_dim: int = 64
    inference: ZeroShotHeadInference = field(default_factory=ZeroShotHeadInference)

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        if self.flow_input not in FLOW_INPUTS:
            raise ValueError(f"flow_input must be one of {FLOW_INPUTS}, got {self.flow_input!r}")
        if len(self.channels) != 4 or min(self.channels) < 1:
            raise ValueError(f"channels must be 4 positive widths (1/2, 1/4, 1/8, 1/16), got {self.channels}")
        if self.decoder_dim < 1 or self.appearance_dim < 1 or self.flow_gain <= 0:
            raise ValueError(f"need decoder_dim, appearance_dim >= 1 and flow_gain > 0, got {self}")
        if self.appearance and not set(APPEARANCE_LAYERS) <= set(self.backbone.return_layers):
            raise ValueError(f"appearance needs backbone.return_layers {sorted(APPEARANCE_LAYERS)}, "
                             f"got {list(self.backbone.return_layers)}")


def conv_block(in_channels: int, out_channels: int, norm: bool = True) -> nn.Sequential:
    """3x3 convolution (+ GroupNorm, groups = gcd(out, 8)) + ReLU; keeps the spatial size."""
    layers: List[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not norm)]
    if norm:
        layers.append(nn.GroupNorm(math.gcd(out_channels, 8), out_channels))
    return nn.Sequential(*layers, nn.ReLU(inplace=True))


def _resize(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear resize to ``size``; identity when equal."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def motion_input(flows: torch.Tensor, flow_input: str = "vector", gain: float = 20.0) -> torch.Tensor:
    """(N, 2, H, W) flow (dx, dy) in pixels -> (N, 3, H, W) resolution-invariant motion input (module docstring).

    ``f~ = f / sqrt(H^2 + W^2)``, ``m = ||f~||``; vector: ``gain * (f~, m)``; angle: ``(f~ / max(m, 1e-3), gain * m)``.
    """
    scaled = normalize_flow(flows)
    magnitude = torch.hypot(scaled[:, :1], scaled[:, 1:])
    if flow_input == "angle":
        return torch.cat([scaled / magnitude.clamp(min=ANGLE_EPS), gain * magnitude], dim=1)
    return gain * torch.cat([scaled, magnitude], dim=1)


@register_architecture
class MPNet(VOSHead):
    """MP-Net; see the module docstring. ``forward(batch)`` -> background / foreground logits of every frame."""

    architecture = "mpnet"
    tasks = ("zero-shot",)
    needs_flow = True
    info = ModelInfo(summary="an MP-Net zero-shot head (Tokmakov et al., CVPR 2017): a fully convolutional "
                             "encoder-decoder on the optical flow of frame t -> t+1 labelling each pixel as moving "
                             "independently (foreground) or not; optionally fused with the shared backbone's RGB "
                             "features.",
                     papers=("mpnet",),
                     limitation="Sees motion only (without the appearance option): static objects are missed, and "
                                "camera-induced motion or bad flow can be taken for an object.")

    def __init__(self, config: Optional[MPNetConfig] = None) -> None:
        super().__init__()
        self.config = cfg = config or MPNetConfig()
        c1, c2, c3, c4 = cfg.channels
        d = cfg.decoder_dim
        self.encoder = nn.ModuleList([conv_block(3, c1, norm=False), conv_block(c1, c2), conv_block(c2, c3),
                                      conv_block(c3, c4)])
        a = 0
        if cfg.appearance:
            self.backbone = backbone_from_config(cfg.backbone)
            a = cfg.appearance_dim
            self.reduce = nn.ModuleDict({name: nn.Sequential(
                nn.Conv2d(self.backbone.out_channels[name], a, 1), nn.ReLU(inplace=True))
                for name in APPEARANCE_LAYERS})
        self.decoder = nn.ModuleList([conv_block(c4 + a, d), conv_block(d + c3 + a, d), conv_block(d + c2 + a, d)])
        self.predictor = nn.Conv2d(d, 2, 1)

    # --- the parts --------------------------------------------------------------------------------------
    def motion_input(self, flows: torch.Tensor) -> torch.Tensor:
        """(N, 2, H, W) flow in pixels -> (N, 3, H, W) the normalised encoder input (see :func:`motion_input`)."""
        return motion_input(flows, self.config.flow_input, self.config.flow_gain)

    def encode(self, x: torch.Tensor) -> List[torch.Tensor]:
        """(N, 3, H, W) motion input -> encoder maps [e2, e4, e8, e16] at 1/2, 1/4, 1/8, 1/16 (ceil sizes)."""
        maps = []
        for block in self.encoder:
            x = F.max_pool2d(block(x), 2, ceil_mode=True)
            maps.append(x)
        return maps

    def appearance_features(self, frames: torch.Tensor) -> List[torch.Tensor]:
        """(N, 3, H, W) RGB in [0, 1] -> reduced backbone features [a16, a8, a4] (N, appearance_dim, ., .)."""
        feats = self.backbone(self.normalize(frames).contiguous(memory_format=torch.channels_last))
        return [self.reduce[name](feats[name]) for name in APPEARANCE_LAYERS]

    def segment(self, flows: torch.Tensor, frames: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Flows (N, 2, H, W) of t -> t+1 (+ frames t (N, 3, H, W) with appearance) -> logits (N, 2, H, W)."""
        # channels-last: about 1.3x faster convolutions and pooling on CPU
        _, e4, e8, e16 = self.encode(self.motion_input(flows).contiguous(memory_format=torch.channels_last))
        app: List[Optional[torch.Tensor]] = [None, None, None]
        if self.config.appearance:
            if frames is None:
                raise ValueError("MP-Net with appearance needs the RGB frames")
            app = self.appearance_features(frames)
        x: Optional[torch.Tensor] = None
        for block, skip, extra in zip(self.decoder, (e16, e8, e4), app):
            size = tuple(skip.shape[-2:])
            parts = ([] if x is None else [_resize(x, size)]) + [skip]
            if extra is not None:
                parts.append(_resize(extra, size))
            x = block(torch.cat(parts, dim=1))
        return _resize(self.predictor(x), tuple(flows.shape[-2:]))

    # --- training and inference -------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, torch.Tensor], offline: bool = True) -> Dict[str, torch.Tensor]:
        """batch ``flows`` (B, T, 2, H, W) (+ ``frames`` (B, T, 3, H, W) with appearance) -> ``logits``
        (B, T, 2, H, W) background / foreground of every frame, ``frames`` = arange(T). Frame t reads only
        ``flows[:, t]`` (and ``frames[:, t]``), so ``offline`` (causal or not) does not change the output."""
        frames = batch.get("frames")
        if "flows" not in batch:
            raise ValueError("MP-Net needs batch['flows'] (B, T, 2, H, W): the optical flow of frame t -> t+1")
        flows = batch["flows"]
        b, t = flows.shape[:2]
        images = frames.flatten(0, 1) if (self.config.appearance and frames is not None) else None
        logits = self.segment(flows.flatten(0, 1), images)
        return {"logits": logits.reshape(b, t, *logits.shape[1:]), "frames": torch.arange(t, device=flows.device)}


CORES.register("mpnet")(video_head_core)
ONLINE_LOSSES.register("mpnet")(segmentation_online_loss)
