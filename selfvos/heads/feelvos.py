"""FEELVOS: fast end-to-end embedding learning for one-shot VOS (Voigtlaender et al., CVPR 2019).

Network (``FEELVOS``, architecture ``"feelvos"``), every map at the matching grid of stride ``s`` (``stride``,
default 8: ``h, w = ceil(H / s), ceil(W / s)``):

- backbone: ResNet-18 at output stride 8; its returned layers (default ``layer1`` at 1/4 and ``layer3`` at 1/8)
  are reduced by 1x1 convolutions, resized to the grid (area pooling down, bilinear up) and fused by a
  depthwise-separable 3x3 convolution into features ``f`` (N, F, h, w) (a DeepLabv3+-style decoder);
- embedding head: depthwise-separable 3x3 convolution + 1x1 convolution -> pixel embeddings ``e`` (N, E, h, w);
- distance ``d(p, q) = 1 - 2 / (1 + exp(||e_p - e_q||^2))`` (``selfvos.layers.embedding_distance``);
- global matching (``selfvos.layers.global_matching``): ``G_o(p) = min_{q in P_{1,o}} d(p, q)`` over the pixels of
  class o in the FIRST frame;
- local previous-frame matching (``selfvos.layers.local_matching``): ``L_o(p)`` = the same minimum over the
  previous frame's pixels predicted as o (argmax) inside a (2R+1)^2 window around p (1 where there is none);
- dynamic segmentation head, run once per class o with shared weights on ``[f, G_o, L_o, P_{t-1,o}]`` (P: the
  previous frame's predicted probability of o): ``head_depth`` depthwise-separable 7x7 convolutions of
  ``head_dim`` channels (DeepLab's split form: depthwise + norm + ReLU, pointwise + norm + ReLU), then a 1x1
  convolution to one logit;
- the K+1 logits are stacked and a softmax over them gives the prediction. As in the paper the background is
  a class like the objects (o = 0, its mask the first frame's background pixels): every class goes through
  the same head and matching. Padded objects (``object_valid`` False) are not run and get logit -1e4.
  The logits are bilinearly upsampled to the input size.

Reduced versus the paper (DeepLabv3+ Xception-65 at stride 4) so that a training step of 4 clips x 3 frames
at 192x320 runs in seconds on 2 CPU cores: ResNet-18 trunk, grid stride 8 (``stride: 4`` gives the paper's),
``feature_dim`` 64 (paper 256), ``embedding_dim`` 32 (paper 100), ``head_dim`` 64 (paper 256, 4 layers kept),
local radius 7 at 1/8 (the paper's 15 at 1/4 spans the same ~60 input pixels).

Training (``forward(batch)``): frame 0's ground-truth classes are the global reference and the first
"previous" frame; frames 1..T-1 are segmented in order, each from the model's own prediction of the frame
before (argmax for the local matching mask, softmax as the probability input). (The paper trains with the
ground truth of the previous frame instead; the platform's heads never see ground truth of frames > 0.)
Labels reach the grid by area pooling of the one-hot classes (void counts for none): ``P`` = class coverage,
the class masks = the argmax of the coverage (cells that are all void belong to no class).

Inference (``FEELVOSInferenceCore``): state = the first frame's embeddings and class masks + the previous
frame's embeddings and probabilities, so memory and time per frame are flat in the video length.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfvos.backbones import BackboneConfig, backbone_from_config
from selfvos.heads.base import HeadConfig, OneShotCore, VOSHead, head_core, segmentation_online_loss
from selfvos.hub.mixin import ModelInfo, register_architecture
from selfvos.layers import global_matching, local_matching
from selfvos.registry import CORES, ONLINE_LOSSES

PADDED_LOGIT = -1e4

State = Tuple[torch.Tensor, torch.Tensor]  # (embeddings (B, E, h, w), class masks or probabilities (B, K+1, h, w))


@dataclass
class FEELVOSInferenceConfig:
    """Test-time settings.

    global_stride: only every l-th first-frame pixel (in y and x) is a global-matching reference (1 = all, the
        paper; 2 = CFBI+'s atrous matching, about 4x fewer distances for large frames).
    """

    global_stride: int = 1

    def __post_init__(self) -> None:
        if self.global_stride < 1:
            raise ValueError(f"global_stride must be >= 1, got {self.global_stride}")


@HeadConfig.register_subclass("feelvos")
@dataclass
class FEELVOSConfig(HeadConfig):
    """Architecture of :class:`FEELVOS` (defaults: CPU-sized, see the module docstring for the paper's values).

    backbone: ResNet trunk at output stride 8 (the MuG backbone's layout); all ``return_layers`` are fused.
    stride: the matching / segmentation grid, 4 or 8 (paper: 4).
    feature_dim: channels of the fused features ``f`` (paper 256); low_dim: of each shallower reduced layer (48).
    embedding_dim: pixel embedding channels (paper 100).
    local_radius: R of the (2R+1)^2 previous-frame window on the grid (paper 15 at stride 4).
    head_dim / head_depth / head_kernel: the dynamic head's separable convolutions (paper 256 / 4 / 7).
    """

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(
        name="resnet18", output_stride=8, return_layers=("layer1", "layer3")))
    stride: int = 8
    feature_dim: int = 64
    low_dim: int = 32
    embedding_dim: int = 32
    local_radius: int = 7
    head_dim: int = 64
    head_depth: int = 4
    head_kernel: int = 7
    inference: FEELVOSInferenceConfig = field(default_factory=FEELVOSInferenceConfig)

    def __post_init__(self) -> None:
        if self.stride not in (4, 8):
            raise ValueError(f"stride must be 4 or 8, got {self.stride}")
        if self.local_radius < 0 or self.head_depth < 1 or self.head_kernel % 2 == 0:
            raise ValueError(f"need local_radius >= 0, head_depth >= 1 and an odd head_kernel, got {self}")


class SeparableConv(nn.Sequential):
    """DeepLab's split separable convolution: depthwise k x k (one filter per channel) + norm + ReLU, then
    pointwise 1x1 + norm + ReLU. GroupNorm (groups = gcd(channels, 8)) stands in for DeepLab's BatchNorm: the
    dynamic head's batch is a varying set of (item, class) maps and the fine-tuning recipes freeze BatchNorm."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, in_channels, kernel, padding=kernel // 2, groups=in_channels, bias=False),
            nn.GroupNorm(math.gcd(in_channels, 8), in_channels), nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.GroupNorm(math.gcd(out_channels, 8), out_channels), nn.ReLU(inplace=True))


def grid_size(size: Tuple[int, int], stride: int) -> Tuple[int, int]:
    return -(-size[0] // stride), -(-size[1] // stride)


def _resize(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Area pooling to a smaller ``size``, bilinear to a larger one, identity when equal."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def class_coverage(ids: torch.Tensor, num_objects: int, size: Tuple[int, int]) -> torch.Tensor:
    """(B, H, W) ids -> (B, K+1, h, w) fraction of each grid cell covered by background (0) / object k (void: none)."""
    classes = torch.arange(0, num_objects + 1, device=ids.device).view(1, -1, 1, 1)
    return _resize((ids.unsqueeze(1) == classes).float(), size)


def hard_masks(probabilities: torch.Tensor) -> torch.Tensor:
    """(B, K+1, h, w) probabilities / coverage -> bool masks of the argmax class; cells of zero mass get none."""
    winner = F.one_hot(probabilities.argmax(dim=1), probabilities.shape[1]).permute(0, 3, 1, 2).bool()
    return winner & (probabilities.sum(dim=1, keepdim=True) > 0)


@register_architecture
class FEELVOS(VOSHead):
    """FEELVOS; see the module docstring. ``forward(batch)`` trains, :class:`FEELVOSInferenceCore` infers."""

    architecture = "feelvos"
    tasks = ("one-shot",)
    info = ModelInfo(summary="a FEELVOS one-shot VOS head (Voigtlaender et al., CVPR 2019): pixel embeddings "
                             "matched globally to the first frame and locally to the previous frame, a dynamic "
                             "segmentation head shared by background and objects, softmax over them.",
                     papers=("feelvos",),
                     limitation="One-shot: it needs the first frame's mask of every object; local matching "
                                "assumes motion within the window between frames.")

    def __init__(self, config: Optional[FEELVOSConfig] = None) -> None:
        super().__init__()
        self.config = cfg = config or FEELVOSConfig()
        self.backbone = backbone_from_config(cfg.backbone)
        layers = self.backbone.return_layers
        channels = self.backbone.out_channels
        self.reduce = nn.ModuleDict({name: nn.Sequential(
            nn.Conv2d(channels[name], cfg.feature_dim if name == layers[-1] else cfg.low_dim, 1), nn.ReLU(inplace=True))
            for name in layers})
        self.fuse = SeparableConv(cfg.feature_dim + cfg.low_dim * (len(layers) - 1), cfg.feature_dim, 3)
        self.embedding = nn.Sequential(SeparableConv(cfg.feature_dim, cfg.feature_dim, 3),
                                       nn.Conv2d(cfg.feature_dim, cfg.embedding_dim, 1))
        # unit-scale inputs (GroupNorm + ReLU: E[a^2] = 1/2) -> embedding channels of variance 1/E, so unrelated
        # pixels start at ||e_p - e_q||^2 ~ 2 where d = tanh(sq / 2) is still sensitive (it saturates at 1 above ~6)
        nn.init.normal_(self.embedding[-1].weight, std=(2.0 / (cfg.feature_dim * cfg.embedding_dim)) ** 0.5)
        nn.init.zeros_(self.embedding[-1].bias)
        dims = [cfg.feature_dim + 3] + [cfg.head_dim] * cfg.head_depth
        self.dynamic_head = nn.Sequential(*[SeparableConv(a, b, cfg.head_kernel) for a, b in zip(dims, dims[1:])],
                                          nn.Conv2d(cfg.head_dim, 1, 1))

    # --- the parts --------------------------------------------------------------------------------------
    def encode(self, frames: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, H, W) in [0, 1] -> features (N, F, h, w), embeddings (N, E, h, w) on the stride-s grid."""
        size = grid_size(tuple(frames.shape[-2:]), self.config.stride)
        feats = self.backbone(self.normalize(frames).contiguous(memory_format=torch.channels_last))
        fused = self.fuse(torch.cat([_resize(self.reduce[name](x), size) for name, x in reversed(feats.items())], 1))
        return fused, self.embedding(fused)

    def segment(self, features: torch.Tensor, embeddings: torch.Tensor, first: State, previous: State,
                valid: Optional[torch.Tensor] = None, global_stride: int = 1) -> torch.Tensor:
        """One frame: logits (B, K+1, h, w) over background + objects on the grid.

        features (B, F, h, w), embeddings (B, E, h, w) of the frame; first = (embeddings, class masks (B, K+1, h, w)
        bool) of the first frame; previous = (embeddings, probabilities (B, K+1, h, w)) of the previous frame;
        valid (B, K) bool, False for padded objects (logit -1e4, never run through the head).
        """
        b, classes = previous[1].shape[:2]
        global_map = global_matching(embeddings, first[0], first[1], stride=global_stride)  # (B, K+1, h, w)
        local_map = local_matching(embeddings, previous[0], hard_masks(previous[1]),
                                   radii=(self.config.local_radius,))[:, 0]
        run = torch.ones(b, classes, dtype=torch.bool, device=features.device)
        if valid is not None:
            run[:, 1:] = valid.bool()
        bi, ci = run.nonzero(as_tuple=True)
        inputs = torch.cat([features[bi], global_map[bi, ci, None], local_map[bi, ci, None],
                            previous[1][bi, ci, None].to(features.dtype)], dim=1)
        # (M, h, w): one logit map per run (item, class); channels-last makes the depthwise backward ~3x faster on CPU
        out = self.dynamic_head(inputs.contiguous(memory_format=torch.channels_last))[:, 0]
        logits = out.new_full((b, classes, *out.shape[-2:]), PADDED_LOGIT)
        return logits.index_put((bi, ci), out)

    # --- training ---------------------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Clip frames (B, T, 3, H, W), first-frame ids ``masks[:, 0]`` -> logits (B, T-1, K+1, H, W) of frames 1..T-1."""
        frames, masks = batch["frames"], batch["masks"]
        b, t = frames.shape[:2]
        if t < 2:
            raise ValueError(f"FEELVOS trains on clips of at least 2 frames, got {t}")
        valid = batch.get("object_valid")
        k = valid.shape[1] if valid is not None else int(masks[:, 0][masks[:, 0] != 255].max().clamp(min=1))
        size = tuple(frames.shape[-2:])
        features, embeddings = self.encode(frames.flatten(0, 1))
        features = features.reshape(b, t, *features.shape[1:])
        embeddings = embeddings.reshape(b, t, *embeddings.shape[1:])
        coverage = class_coverage(masks[:, 0], k, tuple(features.shape[-2:]))
        first = (embeddings[:, 0], hard_masks(coverage))
        previous = (embeddings[:, 0], coverage)
        outputs = []
        for i in range(1, t):
            logits = self.segment(features[:, i], embeddings[:, i], first, previous, valid)
            outputs.append(F.interpolate(logits, size=size, mode="bilinear", align_corners=False))
            previous = (embeddings[:, i], torch.softmax(logits, dim=1))
        return {"logits": torch.stack(outputs, dim=1), "frames": torch.arange(1, t, device=frames.device)}


class FEELVOSInferenceCore(OneShotCore):
    """Per-video FEELVOS state: object ids, the first frame's (embeddings, class masks), the previous frame's
    (embeddings, probabilities). ``step(frame, mask=None) -> (K+1, H, W)``.

    A mask at the first step starts the video (its ids, void 255 excluded, are the objects); a mask at a later
    step replaces that frame's prediction (a correction) and becomes the previous frame; the first frame stays
    the only global reference. Frames are padded (replicate) to a multiple of the grid stride and cropped back.
    """

    def reset(self) -> None:
        super().reset()
        self._first: Optional[State] = None
        self._previous: Optional[State] = None

    def _ids(self, mask: np.ndarray, padded: Tuple[int, int], device: torch.device) -> torch.Tensor:
        """(H, W) original ids -> (1, H', W') class indices 0..K (void and padding 255)."""
        ids = torch.from_numpy(np.asarray(mask, dtype=np.int64))
        classes = torch.full_like(ids, 255)
        classes[ids == 0] = 0
        for k, object_id in enumerate(self._object_ids, start=1):
            classes[ids == object_id] = k
        h, w = ids.shape
        return F.pad(classes, (0, padded[1] - w, 0, padded[0] - h), value=255)[None].to(device)

    @torch.inference_mode()
    def step(self, frame: np.ndarray, mask: Optional[np.ndarray] = None) -> torch.Tensor:
        image, (h, w) = self.image(frame, self.model.config.stride)
        padded = tuple(image.shape[-2:])
        self.read_mask(mask, first=self._first is None)
        features, embeddings = self.model.encode(image)
        grid = tuple(features.shape[-2:])
        k = len(self._object_ids)
        if mask is not None:
            classes = self._ids(mask, padded, image.device)
            coverage = class_coverage(classes, k, grid)
            probabilities = class_coverage(classes, k, padded)[0]
            probabilities[0] += 1.0 - probabilities.sum(dim=0)  # void counts as background in the output
            if self._first is None:
                self._first = (embeddings, hard_masks(coverage))
            self._previous = (embeddings, coverage)
        else:
            logits = self.model.segment(features, embeddings, self._first, self._previous,
                                        global_stride=self.config.global_stride)
            self._previous = (embeddings, torch.softmax(logits, dim=1))
            logits = F.interpolate(logits, size=padded, mode="bilinear", align_corners=False)
            probabilities = torch.softmax(logits, dim=1)[0]
        return probabilities[:, :h, :w].float()


CORES.register("feelvos")(head_core(FEELVOSInferenceCore))


ONLINE_LOSSES.register("feelvos")(segmentation_online_loss)
