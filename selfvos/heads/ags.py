"""AGS: attention-guided segmentation (Wang et al., CVPR 2019, "Learning unsupervised video object segmentation
through visual attention"), a zero-shot head on RGB frames.

The paper splits zero-shot VOS into Dynamic Visual Attention Prediction (DVAP: a CNN-ConvLSTM predicting where
people look in each frame) and Attention-Guided Object Segmentation (AGOS: the attention map modulates the
segmentation features). Network (``AGS``, architecture ``"ags"``), as the authors' released ``deploy.prototxt``,
input a clip (B, T, 3, H, W), per frame x = the backbone's ``layer3`` features (BT, C, h, w) at 1/8:

- segmentation branch (AGOS's features): three cascaded pyramid dilated blocks
  (:class:`~selfvos.layers.pyramid.PyramidDilatedConv`, each a 1x1 centre branch, four dilated 3x3 branches and
  an average-pooling context branch, concatenated and fused by a 1x1 convolution), rates (6, 12, 18, 24) /
  (3, 6, 9, 12) / (2, 4, 6, 8), pooling windows 8 / 4 / 2 -> F (BT, S, h, w);
- attention branch (DVAP): x -> 3x3 convolution stride 2 dilation 2 -> 3x3 dilation 4 -> 3x3 dilation 8 (each
  + norm + ReLU, now at 1/16) -> a ConvLSTM (3x3, dilation 2), forward in time only, as in the paper
  -> 1x1 convolution to one attention logit ``a_t`` (1/16);
  the attention map ``A_t = sigmoid(up(a_t))`` in [0, 1] (``up``: bilinear to the 1/8 grid);
- attention-guided segmentation, residual attention: ``G_t = F_t o (1 + A_t)`` (A broadcast over the channels;
  A = 0 leaves the features unchanged), then a 1x1 convolution to the background / foreground logits,
  bilinearly upsampled to (H, W).

The ConvLSTM is unidirectional, so frame t's output depends on frames 0..t only and ``offline`` changes nothing
(the offline and online outputs are identical).

Training of the attention. The paper trains DVAP on eye-fixation data (DHF1K and its own DAVIS / Youtube-Objects /
SegTrack fixations) with a saliency loss. We have no fixation data: the attention branch is trained through the
mask loss (its only path to the logits is the residual guidance) plus, when ``attention_weight`` > 0, an
auxiliary term returned as ``aux_logits`` (B, T, 2, H, W) = ``[0, up(a_t)]`` (softmax channel 1 = the attention
map at the input size) with ``aux_weight = attention_weight``: the fine-tuning loss scores it against the
ground-truth object mask (the hard mask: the loss has no blurred target), a proxy for fixations, which
concentrate on the primary object. ``attention_weight: 0`` trains the attention through the mask loss only.

Reduced versus the released network (ResNet-50 PSPNet trunk, ``conv5_3`` 2048 channels at 1/8 of 473x473;
pyramid blocks of 256 / 64 / 32 channels per branch and after fusion; attention convolutions 256 / 128 / 32)
so that a training step of 4 clips x 4 frames at 192x320 runs in seconds on 2 CPU cores: ResNet-18 ``layer3``
(256 channels), pyramid widths ``pyramid_dims`` (64, 32, 32), attention widths ``attention_dims`` (64, 32, 32);
kept: the rates and pooling windows, the 32-channel ConvLSTM (3x3, dilation 2), the residual guidance.
GroupNorm stands in for the frozen BatchNorm (see :mod:`selfvos.layers.pyramid`); the paper's CRF
post-processing is not included.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from selfvos.backbones import BackboneConfig, backbone_from_config
from selfvos.heads.base import HeadConfig, VOSHead, segmentation_online_loss
from selfvos.hub.mixin import ModelInfo, register_architecture
from selfvos.inference.video_core import ZeroShotHeadInference, video_head_core
from selfvos.layers.conv_rnn import ConvLSTMCell, run_sequence
from selfvos.layers.pyramid import PyramidDilatedConv, conv_norm_relu
from selfvos.registry import CORES, ONLINE_LOSSES

PYRAMID_RATES = ((6, 12, 18, 24), (3, 6, 9, 12), (2, 4, 6, 8))  # the released network's three blocks
PYRAMID_POOLS = (8, 4, 2)  # their average-pooling windows (on the 1/8 grid)
ATTENTION_DILATIONS = (2, 4, 8)  # the attention convolutions (the first has stride 2)


@HeadConfig.register_subclass("ags")
@dataclass
class AGSConfig(HeadConfig):
    """Architecture of :class:`AGS` (defaults: CPU-sized, see the module docstring for the paper's values).

    backbone: ResNet at output stride 8; the deepest of ``return_layers`` feeds both branches.
    pyramid_dims: per-branch and fused width of the three pyramid blocks (released network 256, 64, 32).
    attention_dims: widths of the three attention convolutions (released 256, 128, 32).
    attention_hidden / attention_kernel / attention_dilation: the attention ConvLSTM (released 32 / 3 / 2).
    attention_weight: weight of the auxiliary attention-vs-mask loss (``aux_weight``); 0 = no auxiliary term.
    """

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(
        name="resnet18", output_stride=8, return_layers=("layer3",)))
    pyramid_dims: Tuple[int, ...] = (64, 32, 32)
    attention_dims: Tuple[int, ...] = (64, 32, 32)
    attention_hidden: int = 32
    attention_kernel: int = 3
    attention_dilation: int = 2
    attention_weight: float = 0.5
    inference: ZeroShotHeadInference = field(default_factory=ZeroShotHeadInference)

    def __post_init__(self) -> None:
        self.pyramid_dims = tuple(int(c) for c in self.pyramid_dims)
        self.attention_dims = tuple(int(c) for c in self.attention_dims)
        if len(self.pyramid_dims) != len(PYRAMID_RATES) or min(self.pyramid_dims) < 1:
            raise ValueError(f"pyramid_dims must be {len(PYRAMID_RATES)} positive widths, got {self.pyramid_dims}")
        if len(self.attention_dims) != len(ATTENTION_DILATIONS) or min(self.attention_dims) < 1:
            raise ValueError(f"attention_dims must be {len(ATTENTION_DILATIONS)} positive widths, "
                             f"got {self.attention_dims}")
        if self.attention_hidden < 1 or self.attention_kernel % 2 != 1 or self.attention_dilation < 1:
            raise ValueError(f"need attention_hidden >= 1, an odd attention_kernel and attention_dilation >= 1, "
                             f"got {self}")
        if self.attention_weight < 0:
            raise ValueError(f"attention_weight must be >= 0, got {self.attention_weight}")
        if self.backbone.output_stride != 8:
            raise ValueError(f"AGS works on the 1/8 grid: backbone.output_stride must be 8, got "
                             f"{self.backbone.output_stride}")


def attention_guided(features: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """Residual attention: features (N, S, h, w) o (1 + attention (N, 1, h, w)); attention 0 -> the features."""
    return features * (1.0 + attention)


@register_architecture
class AGS(VOSHead):
    """AGS; see the module docstring. ``forward(batch, offline)`` -> logits of every frame (+ the attention as
    auxiliary logits)."""

    architecture = "ags"
    tasks = ("zero-shot",)
    needs_flow = False
    info = ModelInfo(summary="an AGS zero-shot head (Wang et al., CVPR 2019): a CNN-ConvLSTM predicts a dynamic "
                             "visual attention map per frame, which guides the object mask through residual "
                             "attention F * (1 + A) on pyramid dilated segmentation features; RGB only.",
                     papers=("ags",),
                     limitation="Zero-shot: it segments the attended object(s) only. Trained without eye-fixation "
                                "data: the attention is learnt from the masks (mask loss + an auxiliary "
                                "attention-vs-mask term), not from human gaze; no CRF post-processing.")

    def __init__(self, config: Optional[AGSConfig] = None) -> None:
        super().__init__()
        self.config = cfg = config or AGSConfig()
        self.backbone = backbone_from_config(cfg.backbone)
        self.layer = self.backbone.return_layers[-1]
        channels = self.backbone.out_channels[self.layer]
        blocks, width = [], channels
        for dim, rates, pool in zip(cfg.pyramid_dims, PYRAMID_RATES, PYRAMID_POOLS):
            blocks.append(PyramidDilatedConv(width, dim, rates, dim, keep_input=False, pool=pool))
            width = dim
        self.segmentation = nn.Sequential(*blocks)
        convs, width = [], channels
        for i, (dim, dilation) in enumerate(zip(cfg.attention_dims, ATTENTION_DILATIONS)):
            convs.append(conv_norm_relu(width, dim, 3, dilation, stride=2 if i == 0 else 1))
            width = dim
        self.attention_convs = nn.Sequential(*convs)
        self.attention_lstm = ConvLSTMCell(width, cfg.attention_hidden, cfg.attention_kernel, cfg.attention_dilation)
        self.attention_out = nn.Conv2d(cfg.attention_hidden, 1, 1)
        self.classifier = nn.Conv2d(cfg.pyramid_dims[-1], 2, 1)

    # --- the parts --------------------------------------------------------------------------------------
    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> backbone features (N, C, h, w) on the 1/8 grid."""
        return self.backbone(self.normalize(frames).contiguous(memory_format=torch.channels_last))[self.layer]

    def attention_logits(self, features: torch.Tensor, b: int, t: int) -> torch.Tensor:
        """DVAP: (B*T, C, h, w) features of B clips of T frames -> attention logits ``a`` (B*T, 1, h', w') at 1/16
        (the ConvLSTM runs forward in time over each clip)."""
        x = self.attention_convs(features)
        hidden = run_sequence(self.attention_lstm, x.reshape(b, t, *x.shape[1:]))
        return self.attention_out(hidden.flatten(0, 1))

    @staticmethod
    def attention_map(logits: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        """Attention logits (N, 1, h', w') -> A = sigmoid(bilinear(a)) (N, 1, *size) in [0, 1]."""
        return torch.sigmoid(F.interpolate(logits, size=size, mode="bilinear", align_corners=False))

    def segment(self, features: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """AGOS head: segmentation features (N, S, h, w), attention (N, 1, h, w) -> logits (N, 2, h, w) on the
        grid, ``classifier(F o (1 + A))``."""
        return self.classifier(attention_guided(features, attention))

    # --- training and inference -------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, torch.Tensor], offline: bool = True) -> Dict[str, torch.Tensor]:
        """batch ``frames`` (B, T, 3, H, W) in [0, 1] -> ``logits`` (B, T, 2, H, W) background / foreground of
        every frame, ``frames`` = arange(T); with ``attention_weight`` > 0 also ``aux_logits`` (B, T, 2, H, W)
        ``[0, a]`` (the attention) and ``aux_weight``. Causal in both modes: ``offline`` changes nothing."""
        frames = batch["frames"]
        b, t = frames.shape[:2]
        size = tuple(frames.shape[-2:])
        x = self.features(frames.flatten(0, 1))
        seg = self.segmentation(x)
        att = self.attention_logits(x, b, t)
        logits = F.interpolate(self.segment(seg, self.attention_map(att, tuple(seg.shape[-2:]))), size=size,
                               mode="bilinear", align_corners=False)
        out = {"logits": logits.reshape(b, t, 2, *size), "frames": torch.arange(t, device=frames.device)}
        if self.config.attention_weight > 0:
            a = F.interpolate(att, size=size, mode="bilinear", align_corners=False)
            out["aux_logits"] = torch.cat([torch.zeros_like(a), a], dim=1).reshape(b, t, 2, *size)
            out["aux_weight"] = self.config.attention_weight
        return out


CORES.register("ags")(video_head_core)
ONLINE_LOSSES.register("ags")(segmentation_online_loss)
