"""A-GAME: a generative appearance model for one-shot VOS (Johnander et al., CVPR 2019) on the selfvos backbone.

Network (``AGAME``, architecture ``"agame"``), run once per object (N = B * K rows), with ``C`` the channels
of the deepest backbone map (``x``, 1/16 by default) and s8 / s4 the shallower skips:

- appearance module (``selfvos.layers.gmm``): 1x1 projection of ``x`` to ``gmm_dim`` and a class-conditional
  Gaussian mixture (background / foreground base + distractor components, diagonal covariances with a learned
  floor), estimated in closed form from the soft mask and updated online with rate lambda; output the
  per-component log posteriors (N, 4, h, w);
- mask-propagation module (RGMP-like, three convolutions): ``[x_t, x_0, y_{t-1}, y_0]`` (features of this and
  the first frame, previous and first soft masks as [background, foreground] at 1/16) -> 1x1 conv ->
  dilated 3x3 pyramid (dilations 1, 3, 6) -> 3x3 conv, ``propagation_dim`` channels;
- fusion: concat(appearance, propagation) -> two 3x3 convs (-> ``fusion_dim``); coarse predictor: 1x1 conv to
  2 logits at 1/16;
- upsampling: twice [1x1 projection of the skip, concat with the bilinearly upsampled map, 3x3 conv] to 1/4,
  final predictor 3x3 conv to 2 logits, bilinear to the input size;
- softmax aggregation of the K objects' foreground logits into K+1 logits (``soft_aggregate``).

Recurrence: frame 0's mask initialises the mixture (lambda = 1) and the propagation state; after each frame the
mixture is updated and the previous mask replaced with the model's own soft prediction: in training the
coarse prediction (``update_with="coarse"``, as the paper and its released training), at inference by
default the soft-aggregated final probabilities area-pooled to 1/16 (the released test setting).

Losses: ``forward`` returns the final ``logits`` and the coarse prediction as ``aux_logits`` (soft-aggregated,
upsampled); the paper adds an auxiliary cross-entropy on the coarse mask, which ``SegmentationLoss`` (fine-tuning and
online) applies with the weight ``coarse_loss`` returned as ``aux_weight``.

Reduced versus the paper (CPU budget, ResNet-18 instead of ResNet-101): ``gmm_dim`` 64 (paper 512 of 2048
channels, the same C/4 ratio), ``propagation_dim`` 128 and ``fusion_dim`` 64 (paper 512 and 128).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, NamedTuple, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfvos.backbones import BackboneConfig, backbone_from_config
from selfvos.heads.base import HeadConfig, OneShotCore, VOSHead, head_core, one_hot_objects, segmentation_online_loss
from selfvos.hub.mixin import ModelInfo, register_architecture
from selfvos.layers import soft_aggregate
from selfvos.layers.gmm import GaussianMixtureAppearance, GMMState
from selfvos.registry import CORES, ONLINE_LOSSES

UPDATES = ("coarse", "final")


@dataclass
class AGAMEInferenceConfig:
    """Test-time settings.

    update_with: ``"final"`` (soft-aggregated final probabilities, area-pooled; released test setting) or
        ``"coarse"`` (each object's own coarse prediction) updates the mixture and the propagated mask.
    dtype: ``"auto"`` (bfloat16 backbone where native) | ``"float32"`` | ``"bfloat16"``; the mixture, the
        propagation and the decoder always run in float32.
    """

    update_with: str = "final"
    dtype: str = "auto"

    def __post_init__(self) -> None:
        if self.update_with not in UPDATES:
            raise ValueError(f"update_with must be one of {UPDATES}, got {self.update_with!r}")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"dtype must be auto, float32 or bfloat16, got {self.dtype!r}")


@HeadConfig.register_subclass("agame")
@dataclass
class AGAMEConfig(HeadConfig):
    """Architecture of :class:`AGAME` (defaults: ResNet-18 at output stride 16, the MuG backbone's weights fit).

    backbone: ``return_layers`` gives the 1/4, 1/8 and deepest (mixture + propagation) maps.
    gmm_dim: projection for the mixture. distractors: 4 components, else 2 (the paper's unimodal ablation).
    update_rate: lambda (released: 0.1). floor_init: raw variance floor, r = softplus(raw) (released: -2).
    prior_count: pseudo-count of the closed-form estimate (see ``selfvos.layers.gmm``).
    appearance_output: ``"log_posterior"`` or ``"log_joint"`` fed to the fusion.
    propagation_dim / fusion_dim: channels of the propagation and fusion / upsampling modules.
    propagate_first_frame: the propagation also sees the first frame's features and mask (released RGMP-like).
    update_with: what updates the state in training (``"coarse"``, the paper; or ``"final"``).
    coarse_loss: weight of the auxiliary coarse loss terms (``aux_weight`` of the forward output).
    """

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(
        name="resnet18", output_stride=16, return_layers=("layer1", "layer2", "layer3")))
    gmm_dim: int = 64
    distractors: bool = True
    update_rate: float = 0.1
    floor_init: float = -2.0
    prior_count: float = 0.1
    appearance_output: str = "log_posterior"
    propagation_dim: int = 128
    fusion_dim: int = 64
    propagate_first_frame: bool = True
    update_with: str = "coarse"
    coarse_loss: float = 1.0
    inference: AGAMEInferenceConfig = field(default_factory=AGAMEInferenceConfig)

    def __post_init__(self) -> None:
        if self.update_with not in UPDATES:
            raise ValueError(f"update_with must be one of {UPDATES}, got {self.update_with!r}")


class AGAMEState(NamedTuple):
    """Per-object recurrent state (N = B * K rows): the mixture, the first frame's deep features (B, C, h, w),
    the first and previous soft masks (N, 2, h, w) as [background, foreground]."""

    gmm: GMMState
    first_features: torch.Tensor
    first_seg: torch.Tensor
    previous_seg: torch.Tensor


def conv_relu(cin: int, cout: int, kernel: int = 3, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=dilation * (kernel // 2), dilation=dilation),
                         nn.ReLU(inplace=True))


class MaskPropagation(nn.Module):
    """(N, C_in, h, w) -> (N, dim, h, w): 1x1 conv, dilated pyramid (1, 3, 6) concatenated, 3x3 conv."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.reduce = conv_relu(in_channels, dim, 1)
        self.pyramid = nn.ModuleList([conv_relu(dim, dim, 3, d) for d in (1, 3, 6)])
        self.merge = conv_relu(3 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        return self.merge(torch.cat([p(x) for p in self.pyramid], dim=1))


class Upsampler(nn.Module):
    """Fused map (N, D, h, w) + projected skips (1/8, 1/4) -> (N, 2, H/4, W/4) logits (concat + 3x3 blend)."""

    def __init__(self, skip_channels: Tuple[int, int], dim: int) -> None:
        super().__init__()
        self.project = nn.ModuleList([conv_relu(c, dim, 1) for c in skip_channels])
        self.blend = nn.ModuleList([conv_relu(2 * dim, dim) for _ in skip_channels])
        self.predict = nn.Conv2d(dim, 2, 3, padding=1)

    def forward(self, x: torch.Tensor, projected_skips: List[torch.Tensor]) -> torch.Tensor:
        for blend, skip in zip(self.blend, projected_skips):
            up = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = blend(torch.cat([skip, up], dim=1))
        return self.predict(x)


def seg_from_probabilities(foreground: torch.Tensor, valid: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """(B, K, H, W) foreground probabilities, (B, 1, H, W) valid-pixel weights -> (B*K, 2, h, w)
    [background, foreground] area-pooled to ``size`` (void / padding counts for neither)."""
    b, k = foreground.shape[:2]
    seg = torch.stack([(1.0 - foreground) * valid, foreground * valid], dim=2).flatten(0, 1)
    return F.interpolate(seg.float(), size=size, mode="area")


@register_architecture
class AGAME(VOSHead):
    """A-GAME; see the module docstring. ``forward(batch)`` trains, ``AGAMEInferenceCore`` infers."""

    architecture = "agame"
    tasks = ("one-shot",)
    info = ModelInfo(summary="an A-GAME one-shot VOS head (Johnander et al., CVPR 2019): a generative Gaussian-"
                             "mixture appearance model of target and background updated online, mask propagation, "
                             "fusion, coarse and upsampled predictions, soft aggregation over objects.",
                     papers=("agame",),
                     limitation="One-shot: it needs the first frame's mask of every object; the appearance model "
                                "is global (no spatial prior beyond the propagated mask).")

    def __init__(self, config: Optional[AGAMEConfig] = None) -> None:
        super().__init__()
        self.config = cfg = config or AGAMEConfig()
        if len(cfg.backbone.return_layers) != 3:
            raise ValueError(f"A-GAME needs three backbone layers (1/4, 1/8, deepest), got {cfg.backbone.return_layers}")
        self.backbone = backbone_from_config(cfg.backbone)
        channels = [self.backbone.out_channels[name] for name in self.backbone.return_layers]
        deep = channels[-1]
        self.appearance = GaussianMixtureAppearance(deep, cfg.gmm_dim, cfg.distractors, cfg.update_rate,
                                                    cfg.floor_init, cfg.prior_count, cfg.appearance_output)
        self.propagation = MaskPropagation((2 * deep + 4) if cfg.propagate_first_frame else (deep + 2),
                                           cfg.propagation_dim)
        self.fusion = nn.Sequential(conv_relu(self.appearance.num_components + cfg.propagation_dim,
                                              cfg.propagation_dim), conv_relu(cfg.propagation_dim, cfg.fusion_dim))
        self.coarse_predictor = nn.Conv2d(cfg.fusion_dim, 2, 1)
        self.upsampler = Upsampler((channels[1], channels[0]), cfg.fusion_dim)

    # --- the parts ----------------------------------------------------------------------------------------
    def encode(self, frames: torch.Tensor, bfloat16: bool = False) -> Dict[str, torch.Tensor]:
        """(B, 3, H, W) in [0, 1] -> deep (B, C, h, w), projected ``proj`` (B, D, h, w), projected skips."""
        with torch.autocast(frames.device.type, dtype=torch.bfloat16, enabled=bfloat16):
            feats = self.backbone(self.normalize(frames))
        s4, s8, deep = (feats[name].float() for name in self.backbone.return_layers)
        return {"deep": deep, "proj": self.appearance.project(deep),
                "s8": self.upsampler.project[0](s8), "s4": self.upsampler.project[1](s4)}

    def init_state(self, enc: Mapping[str, torch.Tensor], seg: torch.Tensor) -> AGAMEState:
        """First frame: mixture from ``seg`` (B*K, 2, h, w) with lambda = 1."""
        k = seg.shape[0] // enc["proj"].shape[0]
        gmm = self.appearance.update(enc["proj"].repeat_interleave(k, 0), seg)
        return AGAMEState(gmm, enc["deep"], seg, seg)

    def update_state(self, state: AGAMEState, enc: Mapping[str, torch.Tensor], seg: torch.Tensor) -> AGAMEState:
        """After a frame: blend the mixture with ``seg``'s estimate (rate lambda), ``seg`` becomes the previous mask."""
        k = seg.shape[0] // enc["proj"].shape[0]
        gmm = self.appearance.update(enc["proj"].repeat_interleave(k, 0), seg, state.gmm)
        return AGAMEState(gmm, state.first_features, state.first_seg, seg)

    def segment(self, enc: Mapping[str, torch.Tensor], state: AGAMEState, size: Tuple[int, int],
                valid: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One frame for every object -> final logits (B, K+1, H, W), coarse logits (B, K+1, H, W) and each
        object's coarse probabilities (B*K, 2, h, w)."""
        b = enc["deep"].shape[0]
        k = state.previous_seg.shape[0] // b

        def per_object(x: torch.Tensor) -> torch.Tensor:
            return x.repeat_interleave(k, dim=0)

        deep = per_object(enc["deep"])
        appearance = self.appearance(per_object(enc["proj"]), state.gmm)
        inputs = [deep, state.previous_seg]
        if self.config.propagate_first_frame:
            inputs += [per_object(state.first_features), state.first_seg]
        fused = self.fusion(torch.cat([appearance, self.propagation(torch.cat(inputs, dim=1))], dim=1))
        coarse = self.coarse_predictor(fused)  # (N, 2, h, w)
        fine = self.upsampler(fused, [per_object(enc["s8"]), per_object(enc["s4"])])
        fine = F.interpolate(fine, size=size, mode="bilinear", align_corners=False)
        coarse_up = F.interpolate(coarse[:, 1:] - coarse[:, :1], size=size, mode="bilinear", align_corners=False)
        logits = soft_aggregate((fine[:, 1] - fine[:, 0]).reshape(b, k, *size), valid)
        coarse_logits = soft_aggregate(coarse_up.reshape(b, k, *size), valid)
        return logits, coarse_logits, torch.softmax(coarse, dim=1)

    # --- training -----------------------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Clip frames (B, T, 3, H, W), first-frame ids ``masks[:, 0]`` -> logits (B, T-1, K+1, H, W) of frames
        1..T-1 (``aux_logits``: the coarse prediction, same shape, weighted ``aux_weight`` in the loss)."""
        frames, masks = batch["frames"], batch["masks"]
        b, t = frames.shape[:2]
        if t < 2:
            raise ValueError(f"A-GAME trains on clips of at least 2 frames, got {t}")
        valid = batch.get("object_valid")
        k = valid.shape[1] if valid is not None else int(masks[:, 0][masks[:, 0] != 255].max().clamp(min=1))
        size = tuple(frames.shape[-2:])
        enc = self.encode(frames.flatten(0, 1))
        enc = {name: x.reshape(b, t, *x.shape[1:]) for name, x in enc.items()}
        grid = tuple(enc["deep"].shape[-2:])
        known = (masks[:, 0] != 255).unsqueeze(1).float()
        state = self.init_state({n: x[:, 0] for n, x in enc.items()},
                                seg_from_probabilities(one_hot_objects(masks[:, 0], k), known, grid))
        outputs, aux = [], []
        for i in range(1, t):
            current = {n: x[:, i] for n, x in enc.items()}
            logits, coarse_logits, coarse = self.segment(current, state, size, valid)
            outputs.append(logits)
            aux.append(coarse_logits)
            if i < t - 1:
                if self.config.update_with == "final":
                    ones = torch.ones_like(known)
                    coarse = seg_from_probabilities(torch.softmax(logits, dim=1)[:, 1:], ones, grid)
                state = self.update_state(state, current, coarse)
        return {"logits": torch.stack(outputs, dim=1), "aux_logits": torch.stack(aux, dim=1),
                "aux_weight": self.config.coarse_loss, "frames": torch.arange(1, t, device=frames.device)}


class AGAMEInferenceCore(OneShotCore):
    """Per-video A-GAME state: object ids, the mixture per object, the first frame's features and mask and the
    previous soft mask (``state_numel`` is flat in the video length). ``step(frame, mask=None) -> (K+1, H, W)``.

    A mask at the first step starts the video (its ids, void 255 excluded, are the objects); a later mask is a
    correction: it is returned as given and updates the mixture (rate lambda) and the propagated mask.
    Frames are padded (replicate) to a multiple of 16 and the output is cropped back.
    """

    def reset(self) -> None:
        super().reset()
        self._state: Optional[AGAMEState] = None

    @property
    def state_numel(self) -> int:
        """Number of values held for the video (mixture, first-frame features and masks, previous mask)."""
        if self._state is None:
            return 0
        s = self._state
        return sum(x.numel() for x in (*s.gmm, s.first_features, s.first_seg, s.previous_seg))

    @torch.inference_mode()
    def step(self, frame: np.ndarray, mask: Optional[np.ndarray] = None) -> torch.Tensor:
        device = self.device
        image, (h, w) = self.image(frame, 16)
        padded = tuple(image.shape[-2:])
        pad = (0, padded[1] - w, 0, padded[0] - h)
        known = F.pad(torch.ones(1, 1, h, w, device=device), pad)  # padding counts for neither class
        self.read_mask(mask, first=self._state is None)
        enc = self.model.encode(image, self.bfloat16)
        grid = tuple(enc["deep"].shape[-2:])
        if mask is not None:
            ids = F.pad(torch.from_numpy(np.asarray(mask, dtype=np.int64)).to(device), pad, value=255)
            one_hot = torch.stack([(ids == i).float() for i in self._object_ids])[None]  # (1, K, H', W')
            seg = seg_from_probabilities(one_hot, known * (ids != 255).float(), grid)
            probabilities = torch.cat([1.0 - one_hot.sum(1).clamp(max=1.0), one_hot[0]])
            if self._state is None:
                self._state = self.model.init_state(enc, seg)
                return probabilities[:, :h, :w]
        else:
            logits, _, coarse = self.model.segment(enc, self._state, padded)
            probabilities = torch.softmax(logits, dim=1)[0]
            seg = coarse if self.config.update_with == "coarse" else \
                seg_from_probabilities(probabilities[None, 1:], known, grid)
        self._state = self.model.update_state(self._state, enc, seg)
        return probabilities[:, :h, :w].float()


CORES.register("agame")(head_core(AGAMEInferenceCore))


ONLINE_LOSSES.register("agame")(segmentation_online_loss)
