"""PDB: Pyramid Dilated Deeper ConvLSTM (Song et al., ECCV 2018), a zero-shot head on RGB frames.

Network (``PDB``, architecture ``"pdb"``), input a clip (B, T, 3, H, W), every map on the 1/8 grid
(``h, w = ceil(H / 8), ceil(W / 8)``):

- backbone: ResNet at output stride 8, its ``layer3`` features x (BT, C, h, w) per frame;
- Pyramid Dilated Convolution (PDC, :class:`~selfvos.layers.pyramid.PyramidDilatedConv`): K = 4 parallel 3x3
  convolutions C -> B with dilation rates r = 2, 4, 8, 16, concatenated WITH the input,
  ``z = [x, T_2(x), T_4(x), T_8(x), T_16(x)]`` (C + 4B channels), then a 1x1 convolution to ``feature_dim``
  channels (the released network's ``conv5_4``, 32 channels) -> X_t (B, T, F, h, w);
- Pyramid Dilated Bidirectional ConvLSTM: one Deeper Bidirectional ConvLSTM (DB-ConvLSTM) per dilation
  d in ``lstm_dilations`` (1, 2), the dilation applied to the ConvLSTMs' gate convolutions. In a DB-ConvLSTM the
  forward and backward ConvLSTMs are stacked (two layers, cascaded), not run side by side on the same input:

      H^f_t = ConvLSTM_f(X_t, H^f_{t-1})          t = 0 .. T-1   (reads the PDC features)
      H^b_t = ConvLSTM_b(H^f_t, H^b_{t+1})        t = T-1 .. 0   (reads the FORWARD ConvLSTM's outputs)
      Y^d_t = H^f_t + H^b_t

  (the released network sums the two directions' hidden maps: ``sum_encode13``, ``sum_encode24`` in the
  authors' ``test.prototxt``); the branches are concatenated, ``Y_t = [Y^1_t, Y^2_t]`` (B, T, 2D, h, w);
- a 1x1 convolution to the background / foreground logits, bilinearly upsampled to (H, W).

Causal mode (``offline=False``): the backward ConvLSTMs do not run and H^b is replaced by zeros (``Y^d_t =
H^f_t``), as :class:`~selfvos.layers.conv_rnn.BidirectionalConvRNN` does, so frame t's output depends on frames
0..t only. Offline (default), every output depends on the whole clip.

Not included: the paper's CRF post-processing of the saliency maps for video object segmentation.
Reduced versus the paper (ResNet-50 PSPNet trunk, ``conv5_3`` 2048 channels at 1/8 of a 473x473 input, PDC
branches of 512 channels) so that a training step of 4 clips x 4 frames at 192x320 runs in seconds on 2 CPU
cores: ResNet-18 ``layer3`` (256 channels) and ``branch_dim`` 64 per PDC branch (the paper's 1/4 of the input
width); kept as in the paper / released network: the rates (2, 4, 8, 16), ``feature_dim`` 32, ConvLSTMs of 32
hidden channels with 3x3 kernels, dilations (1, 2). GroupNorm stands in for the frozen BatchNorm after each PDC
convolution (see :mod:`selfvos.layers.pyramid`). The paper trains with a binary cross-entropy on the sigmoid of
the saliency map; the platform's recipe uses the 2-class cross-entropy on the two logits.
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
from selfvos.layers.pyramid import PyramidDilatedConv
from selfvos.registry import CORES, ONLINE_LOSSES


@HeadConfig.register_subclass("pdb")
@dataclass
class PDBConfig(HeadConfig):
    """Architecture of :class:`PDB` (defaults: CPU-sized, see the module docstring for the paper's values).

    backbone: ResNet at output stride 8; the deepest of ``return_layers`` is the PDC's input.
    rates: dilations of the PDC's 3x3 branches (paper 2, 4, 8, 16). branch_dim: channels per branch (paper 512).
    feature_dim: the 1x1 reduction after the PDC, the ConvLSTMs' input (released network 32).
    hidden: hidden channels of every ConvLSTM (paper 32). kernel: their gate convolution (paper 3).
    lstm_dilations: one DB-ConvLSTM per dilation (paper 1, 2).
    """

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(
        name="resnet18", output_stride=8, return_layers=("layer3",)))
    rates: Tuple[int, ...] = (2, 4, 8, 16)
    branch_dim: int = 64
    feature_dim: int = 32
    hidden: int = 32
    kernel: int = 3
    lstm_dilations: Tuple[int, ...] = (1, 2)
    inference: ZeroShotHeadInference = field(default_factory=ZeroShotHeadInference)

    def __post_init__(self) -> None:
        self.rates = tuple(int(r) for r in self.rates)
        self.lstm_dilations = tuple(int(d) for d in self.lstm_dilations)
        if not self.rates or min(self.rates) < 1 or not self.lstm_dilations or min(self.lstm_dilations) < 1:
            raise ValueError(f"rates and lstm_dilations must be non-empty lists of dilations >= 1, got {self}")
        if min(self.branch_dim, self.feature_dim, self.hidden) < 1 or self.kernel % 2 != 1:
            raise ValueError(f"need branch_dim, feature_dim, hidden >= 1 and an odd kernel, got {self}")
        if self.backbone.output_stride != 8:
            raise ValueError(f"PDB works on the 1/8 grid: backbone.output_stride must be 8, got "
                             f"{self.backbone.output_stride}")


class DeeperBidirectionalConvLSTM(nn.Module):
    """DB-ConvLSTM: a forward ConvLSTM over the input, a backward ConvLSTM over the FORWARD ONE'S OUTPUTS, summed.

    x (N, T, C_in, H, W) -> (N, T, D, H, W): ``H^f = run(forward_cell, x)``, ``H^b = run(backward_cell, H^f,
    reverse)``, output ``H^f + H^b``; ``offline=False``: ``H^b = 0`` (the backward cell does not run).
    ``forward_cell`` reads C_in channels, ``backward_cell`` reads D (the forward cell's hidden size).
    """

    def __init__(self, in_channels: int, hidden: int, kernel: int = 3, dilation: int = 1) -> None:
        super().__init__()
        self.forward_cell = ConvLSTMCell(in_channels, hidden, kernel, dilation)
        self.backward_cell = ConvLSTMCell(hidden, hidden, kernel, dilation)
        self.hidden = hidden

    def directions(self, x: torch.Tensor, offline: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
        """(H^f, H^b), each (N, T, D, H, W); H^b is zeros when not ``offline``."""
        ahead = run_sequence(self.forward_cell, x)
        if not offline:
            return ahead, torch.zeros_like(ahead)
        return ahead, run_sequence(self.backward_cell, ahead, reverse=True)

    def forward(self, x: torch.Tensor, offline: bool = True) -> torch.Tensor:
        ahead, back = self.directions(x, offline)
        return ahead + back


@register_architecture
class PDB(VOSHead):
    """PDB-ConvLSTM; see the module docstring. ``forward(batch, offline)`` -> logits of every frame."""

    architecture = "pdb"
    tasks = ("zero-shot",)
    needs_flow = False
    info = ModelInfo(summary="a PDB zero-shot head (Song et al., ECCV 2018): pyramid dilated convolutions on the "
                             "shared backbone's 1/8 features, then pyramid dilated deeper bidirectional ConvLSTMs "
                             "(a backward ConvLSTM stacked on a forward one, at dilations 1 and 2) and a 1x1 "
                             "classifier; RGB only.",
                     papers=("pdb",),
                     limitation="Zero-shot: it segments the salient object(s) only; the paper's CRF post-processing "
                                "is not included; online (causal) mode drops the backward ConvLSTMs.")

    def __init__(self, config: Optional[PDBConfig] = None) -> None:
        super().__init__()
        self.config = cfg = config or PDBConfig()
        self.backbone = backbone_from_config(cfg.backbone)
        self.layer = self.backbone.return_layers[-1]
        self.pdc = PyramidDilatedConv(self.backbone.out_channels[self.layer], cfg.branch_dim, cfg.rates,
                                      cfg.feature_dim, keep_input=True)
        self.recurrent = nn.ModuleList(DeeperBidirectionalConvLSTM(cfg.feature_dim, cfg.hidden, cfg.kernel, d)
                                       for d in cfg.lstm_dilations)
        self.classifier = nn.Conv2d(cfg.hidden * len(cfg.lstm_dilations), 2, 1)

    # --- the parts --------------------------------------------------------------------------------------
    def spatial_features(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> PDC features (N, feature_dim, h, w) on the 1/8 grid, per frame."""
        feats = self.backbone(self.normalize(frames).contiguous(memory_format=torch.channels_last))[self.layer]
        return self.pdc(feats)

    def spatiotemporal(self, features: torch.Tensor, offline: bool = True) -> torch.Tensor:
        """(B, T, F, h, w) PDC features -> (B, T, hidden * len(lstm_dilations), h, w) DB-ConvLSTM outputs."""
        return torch.cat([branch(features, offline) for branch in self.recurrent], dim=2)

    # --- training and inference -------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, torch.Tensor], offline: bool = True) -> Dict[str, torch.Tensor]:
        """batch ``frames`` (B, T, 3, H, W) in [0, 1] -> ``logits`` (B, T, 2, H, W) background / foreground of
        every frame, ``frames`` = arange(T). ``offline=False``: causal (backward ConvLSTMs off)."""
        frames = batch["frames"]
        b, t = frames.shape[:2]
        size = tuple(frames.shape[-2:])
        features = self.spatial_features(frames.flatten(0, 1))
        hidden = self.spatiotemporal(features.reshape(b, t, *features.shape[1:]), offline)
        logits = F.interpolate(self.classifier(hidden.flatten(0, 1)), size=size, mode="bilinear",
                               align_corners=False)
        return {"logits": logits.reshape(b, t, 2, *size), "frames": torch.arange(t, device=frames.device)}


CORES.register("pdb")(video_head_core)
ONLINE_LOSSES.register("pdb")(segmentation_online_loss)
