"""FusionSeg (FSEG): learning to combine motion and appearance for fully automatic segmentation of generic objects
in videos (Jain, Xiong and Grauman, CVPR 2017), a zero-shot head.

A per-frame two-stream fully convolutional network. Network (``FusionSeg``, architecture ``"fusionseg"``), on the
grid of the trunks' output stride s (``h, w = ceil(H / s), ceil(W / s)``):

- appearance stream (``appearance``): a ResNet trunk (``appearance.backbone``) on the ImageNet-normalised RGB
  frame t, then DeepLab-v2's classifier (:class:`~selfvos.layers.two_stream.DilatedClassifier`: parallel 3x3
  convolutions with dilations ``rates``, summed) -> 2 class scores ``A_t`` (N, 2, h, w);
- motion stream (``motion``): the same architecture with its own trunk (``motion.backbone``, so ``--init`` fills
  it from the same RGB checkpoint, as the paper initialises both streams from ImageNet weights) on the optical
  flow t -> t+1 rendered as an RGB image (:func:`~selfvos.layers.two_stream.flow_to_image`: hue = direction,
  saturation = magnitude / the frame's largest magnitude, white at rest; resolution invariant), normalised like
  an RGB image -> ``M_t`` (N, 2, h, w);
- fusion (:class:`~selfvos.layers.two_stream.PredictionFusion`, the paper's fusion model): three parallel branches on
  the two streams' scores, ``a = relu(c_a(A))``, ``m = relu(c_m(M))`` and ``j = relu(c_a'(A)) * relu(c_m'(M))``
  (c: 1x1 convolutions, 2 -> 2; j is large only where both streams are confident), and the element-wise maximum
  ``max(a, m, j)`` as the fused scores (``fusion: sum`` takes ``a + m + j`` instead); bilinearly upsampled to
  the input size. The authors' released joint model (Caffe) differs from the paper's text: it sums
  ``relu(conv3x3([A, M]))``, ``relu(conv3x3(A))`` and ``relu(conv3x3(M))`` (4 channels each) and predicts with a
  further 3x3 convolution; here the paper's formula is implemented.

Frame t reads only frame t and the flow of t (t -> t+1), so the head is causal by construction and ``offline``
changes nothing.

Reduced versus the paper so that one training step on 4 clips x 4 frames at 192x320 takes seconds on 2 CPU cores
(about 310 GMAC forward + backward per step, 1.25x the STM recipe's): each stream is ResNet-18 up to
``layer3`` at output stride 8 (paper: ResNet-101 at output stride 8, DeepLab-v2); the classifier's dilations are
the paper's (6, 12, 18, 24) at stride 8 (use half of them at output stride 16). Training: the paper trains each
stream alone (appearance on pixel-objectness image data, motion on bootstrapped weakly labelled video frames)
and then only the fusion layer on a few DAVIS frames; the platform's recipe trains the whole network end to end
with one cross-entropy on the fused scores. The flow is the platform's (OpenCV DIS by default; the paper used Ce Liu's coarse-to-fine flow).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F

from selfvos.backbones import BackboneConfig
from selfvos.heads.base import HeadConfig, VOSHead, segmentation_online_loss
from selfvos.hub.mixin import ModelInfo, register_architecture
from selfvos.inference.video_core import ZeroShotHeadInference, video_head_core
from selfvos.layers.two_stream import FUSION_MODES, DilatedClassifier, PredictionFusion, ResNetStream, batch_flows, \
    flow_to_image
from selfvos.registry import CORES, ONLINE_LOSSES


def _trunk() -> BackboneConfig:
    return BackboneConfig(name="resnet18", output_stride=8, return_layers=("layer3",))


@HeadConfig.register_subclass("fusionseg")
@dataclass
class FusionSegConfig(HeadConfig):
    """Architecture of :class:`FusionSeg` (defaults: CPU-sized, see the module docstring for the paper's values).

    backbone / motion_backbone: the appearance and motion trunks (3 input channels each: the motion stream reads
        the flow rendered as an RGB image); each stream classifies its deepest returned layer. Both must have the
        same output stride (the fusion is per grid cell).
    rates: dilations of the DeepLab-v2 classifier of each stream (the paper's (6, 12, 18, 24) at output
        stride 8; halve them at output stride 16).
    fusion: ``max`` (the paper: element-wise maximum of the appearance, motion and product branches) or ``sum``.
    min_motion: the flow rendering's floor of the per-frame normalising magnitude, as a fraction of the diagonal.
    """

    backbone: BackboneConfig = field(default_factory=_trunk)
    motion_backbone: BackboneConfig = field(default_factory=_trunk)
    rates: Tuple[int, ...] = (6, 12, 18, 24)
    fusion: str = "max"
    min_motion: float = 1e-3
    inference: ZeroShotHeadInference = field(default_factory=ZeroShotHeadInference)

    def __post_init__(self) -> None:
        self.rates = tuple(int(r) for r in self.rates)
        if not self.rates or min(self.rates) < 1:
            raise ValueError(f"rates must be dilations >= 1, got {self.rates}")
        if self.fusion not in FUSION_MODES:
            raise ValueError(f"fusion must be one of {FUSION_MODES}, got {self.fusion!r}")
        if self.backbone.output_stride != self.motion_backbone.output_stride:
            raise ValueError(f"the two streams need one output stride, got {self.backbone.output_stride} and "
                             f"{self.motion_backbone.output_stride}")
        if self.backbone.in_chans != 3 or self.motion_backbone.in_chans != 3:
            raise ValueError("both streams read 3-channel images (RGB frame, rendered flow): in_chans must be 3")
        if self.min_motion <= 0:
            raise ValueError(f"min_motion must be > 0, got {self.min_motion}")


@register_architecture
class FusionSeg(VOSHead):
    """FusionSeg; see the module docstring. ``forward(batch)`` -> background / foreground logits of every frame."""

    architecture = "fusionseg"
    tasks = ("zero-shot",)
    needs_flow = True
    info = ModelInfo(summary="a FusionSeg (FSEG) zero-shot head (Jain et al., CVPR 2017): an appearance stream on "
                             "the RGB frame and a motion stream on the optical flow rendered as an image, each a "
                             "ResNet with a DeepLab classifier, fused by the maximum of either stream and their "
                             "product.",
                     papers=("fseg",),
                     limitation="Needs optical flow; per frame (no temporal memory); trained end to end here, "
                                "whereas the paper trains the streams separately on extra image and weakly "
                                "labelled video data before the fusion.")

    def __init__(self, config: Optional[FusionSegConfig] = None) -> None:
        super().__init__()
        self.config = cfg = config or FusionSegConfig()
        self.appearance = ResNetStream(cfg.backbone, lambda channels: DilatedClassifier(channels, 2, cfg.rates))
        self.motion = ResNetStream(cfg.motion_backbone, lambda channels: DilatedClassifier(channels, 2, cfg.rates))
        self.fusion = PredictionFusion(2, cfg.fusion)

    # --- the parts --------------------------------------------------------------------------------------
    def flow_image(self, flows: torch.Tensor) -> torch.Tensor:
        """(N, 2, H, W) flow in pixels -> (N, 3, H, W) its RGB rendering in [0, 1] (the motion stream's image)."""
        return flow_to_image(flows, self.config.min_motion)

    def streams(self, frames: torch.Tensor, flows: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Frames (N, 3, H, W) in [0, 1], flows (N, 2, H, W) -> appearance and motion scores, each (N, 2, h, w)."""
        appearance = self.appearance(self.normalize(frames))
        motion = self.motion(self.normalize(self.flow_image(flows)))
        if motion.shape[-2:] != appearance.shape[-2:]:
            motion = F.interpolate(motion, size=tuple(appearance.shape[-2:]), mode="bilinear", align_corners=False)
        return appearance, motion

    # --- training and inference -------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, torch.Tensor], offline: bool = True) -> Dict[str, torch.Tensor]:
        """batch ``frames`` (B, T, 3, H, W) in [0, 1], ``flows`` (B, T, 2, H, W) -> ``logits`` (B, T, 2, H, W)
        (the fused scores), ``frames`` = arange(T). Per frame: ``offline`` does not change the output."""
        frames = batch["frames"]
        flows = batch_flows(batch, frames, "FusionSeg")
        b, t = frames.shape[:2]
        appearance, motion = self.streams(frames.flatten(0, 1), flows.flatten(0, 1))
        logits = F.interpolate(self.fusion(appearance, motion), size=tuple(frames.shape[-2:]), mode="bilinear",
                               align_corners=False)
        return {"logits": logits.reshape(b, t, *logits.shape[1:]), "frames": torch.arange(t, device=frames.device)}


CORES.register("fusionseg")(video_head_core)
ONLINE_LOSSES.register("fusionseg")(segmentation_online_loss)
