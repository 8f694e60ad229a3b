"""MUNet: motion-uncertainty-aware one-shot VOS (Sun et al., 2021), built on the selfvos STM head.

MUNet is :class:`~selfvos.heads.stm.STM` (same memory encoder, memory read, refinement decoder and soft
aggregation) whose query feature is enhanced by the motion between the query frame t and the previous
frame t-1 before the query key/value embedding. With ``F_s`` (N, C, h, w) the 1/16 query-encoder feature
(C = 256 for ResNet-18 ``layer3``):

- MU-layer (:class:`MotionUncertaintyLayer`): a shared 1x1 conv reduces ``F_s`` of frames t and t-1 to C/4;
  the local cosine cost volume ``C(u, x) = cos(F_t(x), F_{t-1}(x + u))`` over the (2R+1)^2 displacements
  ``u`` (``selfvos.layers.matching.local_correlation``; positions outside the frame are excluded);
  matching probability ``P(u | x) = softmax_u(C(u, x) / tau)`` (learnable temperature ``tau``);
  soft-argmin displacement ``u_hat(x) = sum_u u P(u | x)`` (2 channels, in 1/16 cells);
  uncertainty map ``U(x) = max_u P(u | x)`` (1 channel; high = one confident match);
  motion feature net on ``[u_hat / R, U]`` (the paper's Table 1: 8 convs 3-3(7x7)-16-16-32-32-32-64-C,
  ReLU between) -> ``F_m`` (N, C, h, w).
- MSAM (:class:`MotionAwareSpatialAttention`): ``F = F_s * sigmoid(conv1x1(F_m)) + F_s`` with a
  one-channel attention map; ``F`` replaces ``F_s`` as the input of STM's query key/value convolutions.

Versus the paper: window radius ``R = 4`` (9x9) instead of 25x25 (R = 12) at 1/16, since a 192x320 clip
has a 12x20 map at 1/16 and R = 12 costs 625 correlation passes per frame on CPU; the paper writes the
soft-argmin as ``softmax(-C)`` (a cost convention) while ``C`` is a similarity, so the softmax here is over
``+C / tau``; the paper's Eq. (2) takes the max of the raw cosine, which is 1 for a textureless region as
for a unique match, so the default (``uncertainty="probability"``) takes the max of the matching
probability, and ``uncertainty="cosine"`` is the paper's literal form. ResNet-18 instead of ResNet-50.

Training (``forward``): every clip frame goes through the query encoder once; frame i >= 1 is matched to
frame i-1's reduced feature, then segmented from the memory exactly as STM (frame 0 memorised with its
ground truth, later frames with their own predictions).

Inference (:class:`MUNetInferenceCore`): STM's bounded memory plus the previous frame's reduced query
feature (one (1, C/4, h, w) map), so the state per video is flat in its length.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import nn

from selfvos.heads.base import HeadConfig, head_core, segmentation_online_loss
from selfvos.heads.stm import STM, STMConfig, STMInferenceConfig, STMInferenceCore
from selfvos.hub.mixin import ModelInfo, register_architecture
from selfvos.layers.matching import local_correlation
from selfvos.registry import CORES, ONLINE_LOSSES

# the paper's motion feature net (Table 1): (out channels, kernel) of convs 1..7; conv 8 maps 64 -> C with 1x1
MOTION_NET = ((3, 7), (16, 1), (16, 3), (32, 1), (32, 3), (32, 1), (64, 3))


@dataclass
class MUNetInferenceConfig(STMInferenceConfig):
    """STM's memory schedule and precision (``memory_every``, ``max_memory``, ``dtype``); MUNet's extra state
    is only the previous frame's reduced query feature."""


@HeadConfig.register_subclass("munet")
@dataclass
class MUNetConfig(STMConfig):
    """Architecture of :class:`MUNet`: STM's fields plus the MU-layer's.

    radius: cost-volume window radius R at 1/16 ((2R+1)^2 displacements; paper 25x25, R = 12).
    temperature: initial softmax temperature tau of the matching probability over cosine costs.
    learn_temperature: tau is a trained parameter (else fixed).
    uncertainty: ``"probability"`` (max_u P(u|x), default) or ``"cosine"`` (max_u C(u, x), the paper's Eq. 2).
    """

    radius: int = 4
    temperature: float = 0.1
    learn_temperature: bool = True
    uncertainty: str = "probability"
    inference: MUNetInferenceConfig = field(default_factory=MUNetInferenceConfig)

    def __post_init__(self) -> None:
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        if self.radius < 0 or self.temperature <= 0:
            raise ValueError(f"need radius >= 0 and temperature > 0, got {self.radius}, {self.temperature}")
        if self.uncertainty not in ("probability", "cosine"):
            raise ValueError(f"uncertainty must be probability or cosine, got {self.uncertainty!r}")


class MotionUncertaintyLayer(nn.Module):
    """MU-layer: reduced features of frames t and t-1 -> displacement, uncertainty and motion feature ``F_m``.

    ``reduce``: (N, C, h, w) -> (N, C/4, h, w), applied to both frames; ``match`` and ``forward`` take the
    reduced maps. Displacement channel 0 is dy, channel 1 dx, in cells of the input map: frame t's pixel x
    matches frame t-1's pixel ``x + u_hat(x)``.
    """

    def __init__(self, channels: int, radius: int, temperature: float = 0.1, learn_temperature: bool = True,
                 uncertainty: str = "probability") -> None:
        super().__init__()
        self.radius, self.uncertainty = radius, uncertainty
        self.reduce = nn.Conv2d(channels, max(1, channels // 4), 1)
        log_scale = torch.tensor(-math.log(temperature))
        if learn_temperature:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale, persistent=False)
        steps = torch.arange(-radius, radius + 1, dtype=torch.float32)
        dy, dx = torch.meshgrid(steps, steps, indexing="ij")  # local_correlation's channel order
        self.register_buffer("offsets", torch.stack([dy.flatten(), dx.flatten()], dim=1), persistent=False)
        layers, c_in = [], 3
        for c_out, kernel in MOTION_NET:
            layers += [nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2), nn.ReLU(inplace=True)]
            c_in = c_out
        self.motion_net = nn.Sequential(*layers, nn.Conv2d(c_in, channels, 1))

    def match(self, query: torch.Tensor, reference: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Reduced frame-t and frame-(t-1) maps (N, D, h, w) -> displacement (N, 2, h, w), uncertainty (N, 1, h, w)."""
        cost = local_correlation(query, reference, self.radius, normalize=True).float()  # (N, (2R+1)^2, h, w)
        ones = torch.ones(1, 1, *query.shape[-2:], device=query.device)
        inside = local_correlation(ones, ones, self.radius) > 0.5  # (1, (2R+1)^2, h, w): x + u in the frame
        logits = (cost * self.log_scale.float().exp()).masked_fill(~inside, float("-inf"))
        probability = torch.softmax(logits, dim=1)
        displacement = torch.einsum("nkhw,kc->nchw", probability, self.offsets)
        if self.uncertainty == "probability":
            certainty = probability.amax(dim=1, keepdim=True)
        else:
            certainty = cost.masked_fill(~inside, -1.0).amax(dim=1, keepdim=True)
        return displacement, certainty

    def forward(self, query: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Reduced maps (N, D, h, w) of frames t and t-1 -> motion feature F_m (N, C, h, w)."""
        displacement, certainty = self.match(query, reference)
        motion = torch.cat([displacement / max(self.radius, 1), certainty], dim=1)
        return self.motion_net(motion.to(query.dtype))


class MotionAwareSpatialAttention(nn.Module):
    """MSAM: ``F = F_s * sigmoid(conv1x1(F_m)) + F_s``, a one-channel spatial attention from the motion."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.attention = nn.Conv2d(channels, 1, 1)

    def forward(self, semantic: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        """semantic F_s (N, C, h, w), motion F_m (N, C, h, w) -> fused (N, C, h, w)."""
        return semantic * torch.sigmoid(self.attention(motion)) + semantic


@register_architecture
class MUNet(STM):
    """STM with the MU-layer and MSAM on the query feature; see the module docstring."""

    architecture = "munet"
    tasks = ("one-shot",)
    info = ModelInfo(summary="a MUNet one-shot VOS head (Sun et al., 2021): STM whose query feature is enhanced by "
                             "a motion-uncertainty layer (local cosine cost volume to the previous frame, soft-argmin "
                             "displacement, match confidence) through a motion-aware spatial attention.",
                     papers=("munet",),
                     limitation="One-shot: it needs the first frame's mask of every object to follow.")

    def __init__(self, config: Optional[MUNetConfig] = None) -> None:
        cfg = config or MUNetConfig()
        super().__init__(cfg)
        channels = self.backbone.out_channels[self.backbone.return_layers[-1]]
        self.motion = MotionUncertaintyLayer(channels, cfg.radius, cfg.temperature, cfg.learn_temperature,
                                             cfg.uncertainty)
        self.fusion = MotionAwareSpatialAttention(channels)

    def encode_frames(self, frames: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(N, 3, H, W) in [0, 1] -> semantic F_s (N, C, h, w), its reduction (N, C/4, h, w), skips [1/8, 1/4]."""
        feats = self.backbone(self.normalize(frames))
        deep, mid, shallow = (feats[name] for name in reversed(self.backbone.return_layers))
        return {"semantic": deep, "reduced": self.motion.reduce(deep), "skip8": mid, "skip4": shallow}

    def attend_motion(self, frame: Mapping[str, torch.Tensor], previous: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``encode_frames`` output of frame t + frame t-1's ``reduced`` -> STM query key, value and skips."""
        fused = self.fusion(frame["semantic"], self.motion(frame["reduced"], previous))
        key, value = self.query_key_value(fused)
        return {"key": key, "value": value, "skip8": frame["skip8"], "skip4": frame["skip4"]}

    def encode_query(self, frames: torch.Tensor, previous: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """STM's query encoding with motion to ``previous`` (frame t-1's reduced map; None: the frame itself)."""
        feats = self.encode_frames(frames)
        return self.attend_motion(feats, feats["reduced"] if previous is None else previous)

    def clip_queries(self, frames: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Clip frames (B, T, 3, H, W) -> query encodings of frames 1..T-1 (B, T-1, ...), each with motion to the
        frame before it (STM's ``forward`` does the rest)."""
        b, t = frames.shape[:2]
        feats = {name: x.reshape(b, t, *x.shape[1:]) for name, x in self.encode_frames(frames.flatten(0, 1)).items()}
        current = {name: x[:, 1:].flatten(0, 1) for name, x in feats.items()}
        queries = self.attend_motion(current, feats["reduced"][:, :-1].flatten(0, 1))  # frame i vs frame i-1
        return {name: x.reshape(b, t - 1, *x.shape[1:]) for name, x in queries.items()}


class MUNetInferenceCore(STMInferenceCore):
    """STM's per-video state (object ids, bounded memory) plus the previous frame's reduced query feature.

    ``step(frame, mask=None) -> (K+1, H, W)``: every frame goes through the query encoder (its reduced map is
    the next frame's motion reference); unannotated frames are segmented from the memory with motion to the
    previous frame; a mask (first frame, or a later correction) is taken as the prediction, as in STM.
    """

    def reset(self) -> None:
        super().reset()
        self._previous_reduced: Optional[torch.Tensor] = None

    @torch.inference_mode()
    def step(self, frame: np.ndarray, mask: Optional[np.ndarray] = None) -> torch.Tensor:
        image, (h, w) = self.image(frame, 16)
        padded = tuple(image.shape[-2:])
        self.read_mask(mask, first=self._first is None)
        with torch.autocast(image.device.type, dtype=torch.bfloat16, enabled=self.bfloat16):
            feats = self.model.encode_frames(image)
            if mask is not None:
                probabilities = self._probabilities_from_mask(mask, padded).to(image.device)
            else:
                memory = [self._first, *self._kept] + ([self._previous] if self._previous is not None else [])
                keys = torch.cat([k for k, _ in memory], dim=3)
                values = torch.cat([v for _, v in memory], dim=3)
                query = self.model.attend_motion(feats, self._previous_reduced)
                probabilities = torch.softmax(self.model.segment(query, keys, values, padded).float(), dim=1)[0]
            key, value = self.model.encode_memory(image, probabilities[None, 1:])
            entry = (key.unsqueeze(3), value.unsqueeze(3))
        if self._first is None:
            self._first = entry
        else:  # STM's schedule: every memory_every-th frame and every correction are kept, others are "previous"
            keep = mask is not None or self._index % self.config.memory_every == 0
            if keep and self.config.max_memory:
                self._kept.append(entry)
            self._previous = None if keep and self.config.max_memory else entry
        self._previous_reduced = feats["reduced"]
        self._index += 1
        return probabilities[:, :h, :w].float()


CORES.register("munet")(head_core(MUNetInferenceCore))


ONLINE_LOSSES.register("munet")(segmentation_online_loss)
