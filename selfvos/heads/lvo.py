"""LVO: learning video object segmentation with visual memory (Tokmakov, Alahari and Schmid, ICCV 2017).

A zero-shot head: two streams per frame, a bidirectional convolutional-GRU "visual memory" over the clip, and a
per-frame classifier on the memory. Network (``LVO``, architecture ``"lvo"``), every map on the 1/8 grid
(``h, w = ceil(H / 8), ceil(W / 8)``):

- appearance stream (``appearance``, :class:`~selfvos.layers.two_stream.ResNetStream`): the shared pretrained
  trunk (``appearance.backbone``, ResNet-18 at output stride 8, its ``layer3``) on the ImageNet-normalised RGB
  frame t, then, as in the paper, two 1x1 convolutions with a tanh between them -> ``a_t`` (N, A, h, w);
- motion stream (``motion``, an MP-Net stand-in): a small fully convolutional net
  (:class:`~selfvos.layers.two_stream.FlowEncoder`) on the flow t -> t+1 divided by the image diagonal
  (resolution invariant), a 1x1 convolution and a sigmoid -> the motion probability ``p_t`` (N, 1, h, w) of each
  cell moving independently. As in the paper only this probability map enters the memory;
- visual memory: ``x_t = [a_t, p_t]`` (A + 1 channels) into a ConvGRU of ``memory_dim`` channels
  (:class:`~selfvos.layers.conv_rnn.BidirectionalConvRNN`, ``cell="gru", shared=True``): ONE cell run forward
  (h^f_t after frames 0..t) and backward (h^b_t after frames T-1..t) with identical weights, concatenated
  ``[h^f_t, h^b_t]`` (2 * memory_dim = 128 channels);
- classifier: 3x3 convolution -> ``decoder_dim`` (64) + ReLU, 1x1 convolution -> 2 logits (background /
  foreground), bilinearly upsampled to the input size; the softmax is the loss's.

``forward(batch, offline=True)`` runs the memory both ways over the clip (frame t sees every frame of it);
``offline=False`` runs the forward direction only (the backward half is zeros), so output t depends on frames
0..t and the flow of t, i.e. frames 0..t+1.

Reduced versus the paper so that one training step on 4 clips x 4 frames at 192x320 takes seconds on 2 CPU cores
(about 185 GMAC forward + backward, 0.75x the STM recipe's):
- appearance: ResNet-18 ``layer3`` (256 channels) -> ``appearance_dim`` 64; paper: DeepLab-LargeFOV (VGG-16)
  fc6 (1024 channels, pretrained on PASCAL VOC 2012) -> 128;
- motion: ``FlowEncoder`` (3 stride-2 + 3 dilated 3x3 convolutions, 32-64 channels, under 0.2 GMAC per frame at 192x320)
  trained end to end with the rest from the DAVIS masks; paper: MP-Net, an encoder-decoder pretrained on the
  synthetic FlyingThings3D ground-truth flow to label independently moving pixels, output at 1/4 downsampled
  to 1/8;
- memory: ``memory_dim`` 64 as the paper, ConvGRU kernel ``memory_kernel`` 3 (the paper's ablation favours
  7x7, about 5x the cost);
- the paper's CRF post-processing is not applied.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from selfvos.backbones import BackboneConfig
from selfvos.heads.base import HeadConfig, VOSHead, segmentation_online_loss
from selfvos.hub.mixin import ModelInfo, register_architecture
from selfvos.inference.video_core import ZeroShotHeadInference, video_head_core
from selfvos.layers.conv_rnn import BidirectionalConvRNN
from selfvos.layers.two_stream import FlowEncoder, ResNetStream, batch_flows, normalize_flow
from selfvos.registry import CORES, ONLINE_LOSSES


@HeadConfig.register_subclass("lvo")
@dataclass
class LVOConfig(HeadConfig):
    """Architecture of :class:`LVO` (defaults: CPU-sized, see the module docstring for the paper's values).

    backbone: the appearance trunk; its deepest returned layer is the appearance feature (ResNet-18 layer3 at
        output stride 8: the paper's 1/8 grid).
    appearance_dim: channels of the appearance stream after the 1x1-tanh-1x1 reduction (paper 128).
    motion_channels / motion_dilations: the motion stream's FlowEncoder widths at 1/2, 1/4, 1/8 and the dilations
        of its convolutions at 1/8. flow_gain: multiplies the diagonal-normalised flow (100: 1% reads 1).
    memory_dim: ConvGRU channels per direction (paper 64). memory_kernel: its convolutions (odd; paper 7).
    decoder_dim: the 3x3 convolution after the concatenated directions (paper 64).
    """

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(
        name="resnet18", output_stride=8, return_layers=("layer3",)))
    appearance_dim: int = 64
    motion_channels: Tuple[int, ...] = (32, 32, 64)
    motion_dilations: Tuple[int, ...] = (2, 4, 8)
    flow_gain: float = 100.0
    memory_dim: int = 64
    memory_kernel: int = 3
    decoder_dim: int = 64
    inference: ZeroShotHeadInference = field(default_factory=ZeroShotHeadInference)

    def __post_init__(self) -> None:
        self.motion_channels = tuple(int(c) for c in self.motion_channels)
        self.motion_dilations = tuple(int(d) for d in self.motion_dilations)
        if len(self.motion_channels) != 3 or min(self.motion_channels) < 1 or min(self.motion_dilations, default=1) < 1:
            raise ValueError(f"motion_channels must be 3 positive widths and motion_dilations >= 1, got "
                             f"{self.motion_channels}, {self.motion_dilations}")
        if min(self.appearance_dim, self.memory_dim, self.decoder_dim) < 1 or self.flow_gain <= 0:
            raise ValueError(f"need appearance_dim, memory_dim, decoder_dim >= 1 and flow_gain > 0, got {self}")
        if self.memory_kernel < 1 or self.memory_kernel % 2 == 0:
            raise ValueError(f"memory_kernel must be odd, got {self.memory_kernel}")


def _resize(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Area pooling to a smaller ``size``, bilinear to a larger one, identity when equal."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class MotionStream(nn.Module):
    """Flow (N, 2, H, W) in pixels -> motion probability (N, 1, ceil(H/8), ceil(W/8)) in (0, 1):
    ``sigmoid(conv1x1(FlowEncoder(f / sqrt(H^2 + W^2))))``."""

    def __init__(self, channels: Tuple[int, ...], dilations: Tuple[int, ...], gain: float) -> None:
        super().__init__()
        self.encoder = FlowEncoder(channels, dilations, gain)
        self.predictor = nn.Conv2d(self.encoder.out_channels, 1, 1)

    def forward(self, flows: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.predictor(self.encoder(normalize_flow(flows))))


@register_architecture
class LVO(VOSHead):
    """LVO; see the module docstring. ``forward(batch, offline)`` -> background / foreground logits of every frame."""

    architecture = "lvo"
    tasks = ("zero-shot",)
    needs_flow = True
    info = ModelInfo(summary="an LVO zero-shot head (Tokmakov et al., ICCV 2017): an appearance stream on the "
                             "shared backbone and a motion stream on optical flow, concatenated into a "
                             "bidirectional ConvGRU visual memory (one cell run both ways), then a per-frame "
                             "classifier.",
                     papers=("lvo",),
                     limitation="Needs optical flow; the motion stream is a small net trained with the head, not "
                                "the paper's MP-Net pretrained on synthetic flow. Offline mode reads the whole "
                                "window (both directions); online mode uses the forward memory only.")

    def __init__(self, config: Optional[LVOConfig] = None) -> None:
        super().__init__()
        self.config = cfg = config or LVOConfig()
        dim = cfg.appearance_dim
        self.appearance = ResNetStream(cfg.backbone, lambda channels: nn.Sequential(
            nn.Conv2d(channels, dim, 1), nn.Tanh(), nn.Conv2d(dim, dim, 1)))
        self.motion = MotionStream(cfg.motion_channels, cfg.motion_dilations, cfg.flow_gain)
        self.memory = BidirectionalConvRNN(dim + 1, cfg.memory_dim, cfg.memory_kernel, cell="gru", shared=True)
        self.classifier = nn.Sequential(nn.Conv2d(2 * cfg.memory_dim, cfg.decoder_dim, 3, padding=1),
                                        nn.ReLU(inplace=True), nn.Conv2d(cfg.decoder_dim, 2, 1))

    # --- the parts --------------------------------------------------------------------------------------
    def streams(self, frames: torch.Tensor, flows: torch.Tensor) -> torch.Tensor:
        """Frames (N, 3, H, W) in [0, 1] and their flows (N, 2, H, W) -> memory inputs ``[a, p]`` (N, A + 1, h, w)."""
        appearance = self.appearance(self.normalize(frames))
        motion = _resize(self.motion(flows), tuple(appearance.shape[-2:]))
        return torch.cat([appearance, motion.to(appearance.dtype)], dim=1)

    # --- training and inference -------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, torch.Tensor], offline: bool = True) -> Dict[str, torch.Tensor]:
        """batch ``frames`` (B, T, 3, H, W) in [0, 1], ``flows`` (B, T, 2, H, W) -> ``logits`` (B, T, 2, H, W),
        ``frames`` = arange(T). ``offline=False``: output t depends on frames 0..t+1 only."""
        frames = batch["frames"]
        flows = batch_flows(batch, frames, "LVO")
        b, t = frames.shape[:2]
        x = self.streams(frames.flatten(0, 1), flows.flatten(0, 1))
        memory = self.memory(x.reshape(b, t, *x.shape[1:]), offline=offline)  # (B, T, 2 * memory_dim, h, w)
        logits = self.classifier(memory.flatten(0, 1))
        logits = F.interpolate(logits, size=tuple(frames.shape[-2:]), mode="bilinear", align_corners=False)
        return {"logits": logits.reshape(b, t, *logits.shape[1:]), "frames": torch.arange(t, device=frames.device)}


CORES.register("lvo")(video_head_core)
ONLINE_LOSSES.register("lvo")(segmentation_online_loss)
