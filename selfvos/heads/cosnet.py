"""COSNet: co-attention Siamese networks for zero-shot VOS (Lu et al., CVPR 2019) on the shared selfvos backbone.

Network (``COSNet``, architecture ``"cosnet"``), for a query frame a and reference frames b_1..b_n:

- feature embedding: backbone (ResNet-18 at output stride 8) -> ``layer3`` (256 channels, 1/8), reduced by a
  1x1 convolution + ReLU to ``V`` (C = ``feature_dim`` channels, h x w = H/8 x W/8); ``layer1`` (64, 1/4) is
  kept as the decoder's skip. Every frame of a forward call goes through the backbone ONCE (in one batch when
  training, in chunks of ``encode_chunk`` frames at inference), whatever the number of (query, reference) pairs;
- gated co-attention (``selfvos.layers.coattention.CoAttention``, ``variant`` vanilla | symmetric | channel):
  ``S = V_b^T W V_a``, ``Z_a = V_b softmax_col(S)``, gated ``Z_a * f_g(Z_a)`` with
  ``f_g(Z) = sigmoid(w_f Z + b_f)``; ``W V_a`` is computed once per query frame;
- the query's summary is the mean over its references of the gated summaries (paper Eq. 13, test time):
  ``Z_a = 1/n sum_k Z_{a,b_k} * f_g(Z_{a,b_k})``;
- segmentation module on ``X_a = [Z_a, V_a]`` (2C channels at 1/8): the refinement decoder
  (``selfvos.layers.RefinementDecoder``: 3x3 conv + ResBlock, one refinement with the ``layer1`` skip) -> 2
  logits (background, foreground) at 1/4, bilinearly upsampled to the input size.

References (:func:`select_references`): every frame of the clip is a query. ``offline=True``: its references are
the other frames of the clip (COSNet trains on pairs; with T frames the query averages over its T - 1 partners,
as at test time); ``offline=False`` (causal): the frames before it only (frame 0 attends to itself). In eval mode
at most ``num_references`` (paper: N = 5 saturates) are used: spread evenly over the window (offline; the paper's
global uniform sampling) or the N most recent past frames (online). The generic inference core
(``selfvos.inference.video_core``) calls ``forward`` on windows of the video; the per-frame features of a window
are the cache of that call, so a frame is encoded once however many queries use it.

Reduced versus the paper so that a training step (4 clips x 4 frames at 192x320) takes seconds on 2 CPU cores:
ResNet-18 ``layer3`` at 1/8 reduced 256 -> ``feature_dim`` 64 channels (paper: DeepLabv3 on ResNet-101, 2048 ->
512 channels at 1/8), decoder of ``decoder_dim`` 64 channels with one skip (paper: two 3x3 conv layers and a 1x1
classifier at 1/8). Not done: the paper's alternating saliency training (MSRA10k, DUT) and the CRF (J 78.3 ->
80.5 on DAVIS-16).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Dict, List, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from selfvos.backbones import BackboneConfig, backbone_from_config
from selfvos.heads.base import HeadConfig, VOSHead, segmentation_online_loss
from selfvos.hub.mixin import ModelInfo, register_architecture
from selfvos.inference.video_core import ZeroShotHeadInference, video_head_core
from selfvos.layers import RefinementDecoder
from selfvos.layers.coattention import VARIANTS, CoAttention
from selfvos.registry import CORES, ONLINE_LOSSES


@HeadConfig.register_subclass("cosnet")
@dataclass
class COSNetConfig(HeadConfig):
    """Architecture of :class:`COSNet` (defaults: CPU-sized, see the module docstring for the paper's values).

    backbone: ResNet trunk at output stride 8; ``return_layers`` = (skip at 1/4, features at 1/8).
    variant: co-attention ``"vanilla"`` (W full), ``"symmetric"`` (W = P^T D P, the paper's best) or ``"channel"``.
    feature_dim: C, channels of ``V`` after the 1x1 reduction (paper 512).
    decoder_dim: channels of the segmentation decoder.
    num_references: N, references per query in eval mode (paper: 5); training uses all candidates of the clip.
    encode_chunk: frames per backbone call in eval mode (bounds memory on long windows).
    inference: the generic zero-shot core's settings.
    """

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(
        name="resnet18", output_stride=8, return_layers=("layer1", "layer3")))
    variant: str = "symmetric"
    feature_dim: int = 64
    decoder_dim: int = 64
    num_references: int = 5
    encode_chunk: int = 8
    inference: ZeroShotHeadInference = field(default_factory=ZeroShotHeadInference)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if min(self.feature_dim, self.decoder_dim, self.num_references, self.encode_chunk) < 1:
            raise ValueError(f"feature_dim, decoder_dim, num_references and encode_chunk must be >= 1, got {self}")
        if len(self.backbone.return_layers) != 2:
            raise ValueError(f"backbone.return_layers must be (skip layer, feature layer), got {self.backbone.return_layers}")


def select_references(num_frames: int, offline: bool = True, limit: Optional[int] = None) -> List[List[int]]:
    """References of every query frame t of a window of ``num_frames`` frames, ascending.

    Candidates: ``offline`` the other frames, else the frames before t (frame 0: ``[0]``, itself). When there are
    more than ``limit``: offline, the candidates at the centres of ``limit`` equal bins (``c[floor((k + 1/2) n /
    limit)]``, k < limit, spread evenly over the window); online, the ``limit`` most recent.
    """
    references = []
    for t in range(num_frames):
        candidates = [i for i in range(num_frames) if i != t] if offline else list(range(t))
        candidates = candidates or [t]
        n = len(candidates)
        if limit is not None and n > limit:
            candidates = [candidates[(2 * k + 1) * n // (2 * limit)] for k in range(limit)] if offline \
                else candidates[-limit:]
        references.append(candidates)
    return references


@register_architecture
class COSNet(VOSHead):
    """COSNet; see the module docstring. ``forward(batch, offline)`` trains and infers (generic video core)."""

    architecture = "cosnet"
    tasks = ("zero-shot",)
    needs_flow: ClassVar[bool] = False
    info = ModelInfo(summary="a COSNet zero-shot VOS head (Lu et al., CVPR 2019): gated co-attention (vanilla, "
                             "symmetric W = P^T D P or channel-wise) of each frame with N reference frames, "
                             "summaries averaged, decoded with the frame's features.",
                     papers=("cosnet",),
                     limitation="Zero-shot: it segments the primary (recurring, salient) object and cannot be told "
                                "which object to follow; one foreground for all objects.")

    def __init__(self, config: Optional[COSNetConfig] = None) -> None:
        super().__init__()
        self.config = cfg = config or COSNetConfig()
        self.backbone = backbone_from_config(cfg.backbone)
        self.skip_layer, self.feature_layer = self.backbone.return_layers
        channels = self.backbone.out_channels
        self.reduce = nn.Sequential(nn.Conv2d(channels[self.feature_layer], cfg.feature_dim, 1), nn.ReLU(inplace=True))
        self.coattention = CoAttention(cfg.feature_dim, cfg.variant)
        self.decoder = RefinementDecoder(2 * cfg.feature_dim, (channels[self.skip_layer],), dim=cfg.decoder_dim,
                                         out_channels=2)

    # --- the parts --------------------------------------------------------------------------------------
    def encode(self, frames: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(N, 3, H, W) in [0, 1] -> ``{"features": V (N, C, H/8, W/8), "skip": layer1 (N, 64, H/4, W/4)}``; one
        backbone pass per frame (one call in training, chunks of ``encode_chunk`` frames in eval mode)."""
        chunk = frames.shape[0] if self.training else self.config.encode_chunk
        features, skips = [], []
        for start in range(0, frames.shape[0], chunk):
            x = self.normalize(frames[start:start + chunk]).contiguous(memory_format=torch.channels_last)
            out = self.backbone(x)
            features.append(self.reduce(out[self.feature_layer]))
            skips.append(out[self.skip_layer])
        return {"features": torch.cat(features), "skip": torch.cat(skips)}

    def summary(self, query: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        """Mean gated co-attention summary of one query over its references.

        query ``V_a`` (B, C, h, w), references (B, n, C, h, w) -> ``1/n sum_k Z_{a,b_k} * f_g(Z_{a,b_k})``
        (B, C, h, w); ``W V_a`` is computed once and shared by the n pairs.
        """
        b, n = references.shape[:2]
        transformed = self.coattention.transform(query.flatten(2))  # (B, C, hw)
        transformed = transformed[:, None].expand(b, n, *transformed.shape[1:]).flatten(0, 1)
        z = self.coattention.summary(query[:, None].expand_as(references).flatten(0, 1), references.flatten(0, 1),
                                     transformed_query=transformed)
        return self.coattention.gated(z).view_as(references).mean(dim=1)

    def segment(self, summary: torch.Tensor, features: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Segmentation module: ``[Z, V]`` (N, 2C, h, w) + skip (N, 64, H/4, W/4) -> logits (N, 2, H/4, W/4)."""
        return self.decoder(torch.cat([summary, features], dim=1), [skip])

    # --- training and inference -------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, torch.Tensor], offline: bool = True) -> Dict[str, torch.Tensor]:
        """Clip frames (B, T, 3, H, W) -> ``{"logits": (B, T, 2, H, W), "frames": arange(T)}``, every frame a query
        with the references of :func:`select_references` (at most ``num_references`` in eval mode)."""
        frames = batch["frames"]
        b, t = frames.shape[:2]
        size = tuple(frames.shape[-2:])
        encoded = self.encode(frames.flatten(0, 1))
        features = encoded["features"].view(b, t, *encoded["features"].shape[1:])
        skips = encoded["skip"].view(b, t, *encoded["skip"].shape[1:])
        limit = None if self.training else self.config.num_references
        references = select_references(t, offline=offline, limit=limit)
        chunk = t if self.training else self.config.encode_chunk
        outputs = []
        for start in range(0, t, chunk):
            stop = min(start + chunk, t)
            summaries = torch.stack([self.summary(features[:, i], features[:, references[i]])
                                     for i in range(start, stop)], dim=1)
            logits = self.segment(summaries.flatten(0, 1), features[:, start:stop].flatten(0, 1),
                                  skips[:, start:stop].flatten(0, 1))
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            outputs.append(logits.view(b, stop - start, *logits.shape[1:]))
        return {"logits": torch.cat(outputs, dim=1), "frames": torch.arange(t, device=frames.device)}


CORES.register("cosnet")(video_head_core)
ONLINE_LOSSES.register("cosnet")(segmentation_online_loss)
