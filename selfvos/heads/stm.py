"""STM: space-time memory networks for one-shot VOS (Oh et al., ICCV 2019) on the shared selfvos backbone.

Network (``STM``, architecture ``"stm"``), with ``C`` the channels of the deepest backbone layer at 1/16:

- query encoder: backbone (frame) -> r4 (C, 1/16), r3 (1/8), r2 (1/4); key/value convolutions on r4
  (keys ``key_dim`` = C/8, values ``value_dim`` = C/2 by default);
- memory encoder: a second backbone whose stem adds ``conv(mask, others)`` to ``conv1(frame)`` (the object's
  mask and the union of the other objects' masks), its own key/value convolutions;
- memory read (``selfvos.layers.memory_read``): softmax over ALL memory cells of all memory frames of the
  query-key dot products / sqrt(key_dim), concatenated with the query's values;
- decoder (``selfvos.layers.decoders``): refinement modules with the r3 and r2 skips to 1/4, 2-channel
  logits per object, bilinear to the input size;
- soft aggregation of the K objects' foreground probabilities into K+1 logits.

Training (``forward(batch)``): the first frame is memorised with its ground-truth masks, every later frame
of the clip is segmented from the memory so far and then memorised with its own predicted probabilities.

Inference (``STMInferenceCore``, registered for ``"stm"``): memory = the first frame + every
``memory_every``-th frame (at most ``max_memory`` of them, oldest dropped) + the previous frame, so memory
and time per frame are flat in the video length.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Deque, Dict, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfvos.backbones import BackboneConfig, backbone_from_config
from selfvos.heads.base import HeadConfig, OneShotCore, VOSHead, one_hot_objects, head_core, segmentation_online_loss
from selfvos.hub.mixin import ModelInfo, register_architecture
from selfvos.layers import KeyValue, RefinementDecoder, memory_read, soft_aggregate
from selfvos.registry import CORES, ONLINE_LOSSES


@dataclass
class STMInferenceConfig:
    """Memory management and precision at inference.

    memory_every: every N-th frame joins the memory for good (STM: 5).
    max_memory: at most this many such frames besides the first (oldest dropped); bounds time and memory.
    dtype: ``"auto"`` (bfloat16 autocast where the CPU/GPU runs it natively) | ``"float32"`` | ``"bfloat16"``.
    """

    memory_every: int = 5
    max_memory: int = 4
    dtype: str = "auto"

    def __post_init__(self) -> None:
        if self.memory_every < 1 or self.max_memory < 0:
            raise ValueError(f"need memory_every >= 1 and max_memory >= 0, got {self}")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"dtype must be auto, float32 or bfloat16, got {self.dtype!r}")


@HeadConfig.register_subclass("stm")
@dataclass
class STMConfig(HeadConfig):
    """Architecture of :class:`STM` (defaults: ResNet-18 at output stride 16, the MuG backbone's weights fit).

    backbone: query and memory encoders (two copies); ``return_layers`` must give the 1/4, 1/8 and 1/16 maps.
    key_dim / value_dim: memory key and value channels (STM: C/8 and C/2 of the 1/16 map).
    decoder_dim: channels of the refinement decoder.
    inference: memory management at test time.
    """

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(
        name="resnet18", output_stride=16, return_layers=("layer1", "layer2", "layer3")))
    key_dim: int = 32
    value_dim: int = 128
    decoder_dim: int = 128
    inference: STMInferenceConfig = field(default_factory=STMInferenceConfig)


class MemoryEncoder(nn.Module):
    """Frame + object mask + other objects' mask -> key (N, Dk, h, w), value (N, Dv, h, w) at 1/16."""

    def __init__(self, backbone_cfg: BackboneConfig, key_dim: int, value_dim: int) -> None:
        super().__init__()
        deepest = backbone_cfg.return_layers[-1]
        self.backbone = backbone_from_config(BackboneConfig(
            name=backbone_cfg.name, output_stride=backbone_cfg.output_stride, in_chans=3,
            pretrained=backbone_cfg.pretrained, return_layers=(deepest,)))
        self.mask_conv = nn.Conv2d(2, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.zeros_(self.mask_conv.weight)  # starts as the frame-only encoder (e.g. the pretrained one)
        self.layer = deepest
        self.key_value = KeyValue(self.backbone.out_channels[deepest], key_dim, value_dim)

    def forward(self, frames: torch.Tensor, masks: torch.Tensor, others: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """frames (N, 3, H, W) normalised, masks / others (N, 1, H, W) in [0, 1]."""
        b = self.backbone
        x = b.conv1(frames) + self.mask_conv(torch.cat([masks, others], dim=1))
        x = b.maxpool(b.relu(b.bn1(x)))
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(b, name)(x)
            if name == self.layer:
                break
        return self.key_value(x)


@register_architecture
class STM(VOSHead):
    """Space-time memory network; see the module docstring. ``forward(batch)`` trains, the core infers."""

    architecture = "stm"
    tasks = ("one-shot",)
    info = ModelInfo(summary="an STM one-shot VOS head (Oh et al., ICCV 2019): space-time memory read over past "
                             "frames and their masks, refinement decoder, soft aggregation over objects.",
                     papers=("stm",),
                     limitation="One-shot: it needs the first frame's mask of every object to follow.")

    def __init__(self, config: Optional[STMConfig] = None) -> None:
        super().__init__()
        self.config = cfg = config or STMConfig()
        if len(cfg.backbone.return_layers) != 3:
            raise ValueError(f"STM needs three backbone layers (1/4, 1/8, 1/16), got {cfg.backbone.return_layers}")
        self.backbone = backbone_from_config(cfg.backbone)
        layers = self.backbone.return_layers
        channels = [self.backbone.out_channels[name] for name in layers]
        self.query_key_value = KeyValue(channels[-1], cfg.key_dim, cfg.value_dim)
        self.memory_encoder = MemoryEncoder(cfg.backbone, cfg.key_dim, cfg.value_dim)
        self.decoder = RefinementDecoder(2 * cfg.value_dim, channels[-2::-1], cfg.decoder_dim, out_channels=2)

    # --- the three parts --------------------------------------------------------------------------------
    def encode_query(self, frames: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(N, 3, H, W) in [0, 1] -> key (N, Dk, h, w), value (N, Dv, h, w), skips [1/8, 1/4] maps."""
        feats = self.backbone(self.normalize(frames))
        deep, mid, shallow = (feats[name] for name in reversed(self.backbone.return_layers))
        key, value = self.query_key_value(deep)
        return {"key": key, "value": value, "skip8": mid, "skip4": shallow}

    def encode_memory(self, frames: torch.Tensor, probabilities: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """frames (B, 3, H, W) in [0, 1], object probabilities (B, K, H, W) -> keys (B, K, Dk, h, w), values."""
        b, k = probabilities.shape[:2]
        total = probabilities.sum(dim=1, keepdim=True)
        others = (total - probabilities).clamp(0.0, 1.0)
        images = self.normalize(frames).repeat_interleave(k, dim=0)
        key, value = self.memory_encoder(images, probabilities.reshape(b * k, 1, *probabilities.shape[-2:]),
                                         others.reshape(b * k, 1, *others.shape[-2:]))
        return key.reshape(b, k, *key.shape[1:]), value.reshape(b, k, *value.shape[1:])

    def segment(self, query: Mapping[str, torch.Tensor], memory_keys: torch.Tensor, memory_values: torch.Tensor,
                size: Tuple[int, int], valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Read the memory and decode every object.

        query: ``encode_query`` output for B frames; memory_keys (B, K, Dk, T, h, w), memory_values
        (B, K, Dv, T, h, w); valid (B, K) bool for padded objects. Returns (B, K+1, H, W) logits.
        """
        b, k = memory_keys.shape[:2]

        def per_object(x: torch.Tensor) -> torch.Tensor:
            return x.repeat_interleave(k, dim=0)

        read = memory_read(memory_keys.flatten(0, 1), memory_values.flatten(0, 1), per_object(query["key"]))
        x = torch.cat([read, per_object(query["value"])], dim=1)
        logits = self.decoder(x, [per_object(query["skip8"]), per_object(query["skip4"])])  # (B*K, 2, H/4, W/4)
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        foreground = (logits[:, 1] - logits[:, 0]).reshape(b, k, *size)  # logit of softmax(logits)[1]
        return soft_aggregate(foreground, valid)

    # --- training ---------------------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Clip frames (B, T, 3, H, W), first-frame ids ``masks[:, 0]`` -> logits (B, T-1, K+1, H, W) of frames 1..T-1."""
        frames, masks = batch["frames"], batch["masks"]
        b, t = frames.shape[:2]
        if t < 2:
            raise ValueError(f"{type(self).__name__} trains on clips of at least 2 frames, got {t}")
        valid = batch.get("object_valid")
        k = valid.shape[1] if valid is not None else int(masks[:, 0][masks[:, 0] != 255].max().clamp(min=1))
        size = tuple(frames.shape[-2:])
        queries = self.clip_queries(frames)
        return self.propagate(queries, frames, one_hot_objects(masks[:, 0], k), size, valid)

    def clip_queries(self, frames: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Clip frames (B, T, 3, H, W) -> the query encodings of frames 1..T-1, each (B, T-1, ...)."""
        b, t = frames.shape[:2]
        queries = self.encode_query(frames[:, 1:].flatten(0, 1))
        return {name: x.reshape(b, t - 1, *x.shape[1:]) for name, x in queries.items()}

    def propagate(self, queries: Mapping[str, torch.Tensor], frames: torch.Tensor, first: torch.Tensor,
                  size: Tuple[int, int], valid: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The training recurrence: memorise frame 0 with its masks ``first`` (B, K, H, W), then segment frames
        1..T-1 from their ``queries`` (each entry (B, T-1, ...)) and memorise each with its own prediction."""
        t = frames.shape[1]
        keys, values = self.encode_memory(frames[:, 0], first)
        memory_k, memory_v = keys.unsqueeze(3), values.unsqueeze(3)  # (B, K, D, T=1, h, w)
        outputs = []
        for i in range(t - 1):
            logits = self.segment({name: x[:, i] for name, x in queries.items()}, memory_k, memory_v, size, valid)
            outputs.append(logits)
            if i < t - 2:
                keys, values = self.encode_memory(frames[:, i + 1], torch.softmax(logits, dim=1)[:, 1:])
                memory_k = torch.cat([memory_k, keys.unsqueeze(3)], dim=3)
                memory_v = torch.cat([memory_v, values.unsqueeze(3)], dim=3)
        return {"logits": torch.stack(outputs, dim=1), "frames": torch.arange(1, t, device=frames.device)}


class STMInferenceCore(OneShotCore):
    """Per-video STM state: object ids and the bounded memory. ``step(frame, mask=None) -> (K+1, H, W)``.

    A mask at the first step starts the video (its ids, void 255 excluded, are the objects); a mask at a
    later step replaces the prediction for that frame (a correction), which then joins the memory for good.
    Frames are padded (replicate) to a multiple of 16 and the output is cropped back.
    """

    def reset(self) -> None:
        super().reset()
        self._first: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
        self._kept: Deque[Tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=self.config.max_memory or None)
        self._previous: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
        self._index = 0

    @property
    def memory_frames(self) -> int:
        """Frames in the memory now (first + kept + previous)."""
        return int(self._first is not None) + len(self._kept) + int(self._previous is not None)

    def _probabilities_from_mask(self, mask: np.ndarray, padded: Tuple[int, int]) -> torch.Tensor:
        ids = torch.from_numpy(np.asarray(mask, dtype=np.int64))
        one_hot = torch.stack([(ids == i).float() for i in self._object_ids])  # (K, H, W); K >= 1 after step 0
        h, w = ids.shape
        one_hot = F.pad(one_hot, (0, padded[1] - w, 0, padded[0] - h))
        background = 1.0 - one_hot.sum(dim=0, keepdim=True).clamp(max=1.0)
        return torch.cat([background, one_hot])  # (K+1, H', W')

    @torch.inference_mode()
    def step(self, frame: np.ndarray, mask: Optional[np.ndarray] = None) -> torch.Tensor:
        image, (h, w) = self.image(frame, 16)
        padded = tuple(image.shape[-2:])
        self.read_mask(mask, first=self._first is None)
        with torch.autocast(image.device.type, dtype=torch.bfloat16, enabled=self.bfloat16):
            if mask is not None:
                probabilities = self._probabilities_from_mask(mask, padded).to(image.device)
            else:
                memory = [self._first, *self._kept] + ([self._previous] if self._previous is not None else [])
                keys = torch.cat([k for k, _ in memory], dim=3)
                values = torch.cat([v for _, v in memory], dim=3)
                logits = self.model.segment(self.model.encode_query(image), keys, values, padded)
                probabilities = torch.softmax(logits.float(), dim=1)[0]
            key, value = self.model.encode_memory(image, probabilities[None, 1:])
            entry = (key.unsqueeze(3), value.unsqueeze(3))
        if self._first is None:
            self._first = entry
        else:
            keep = mask is not None or self._index % self.config.memory_every == 0
            if keep and self.config.max_memory:
                self._kept.append(entry)
            self._previous = None if keep and self.config.max_memory else entry  # never twice in the memory
        self._index += 1
        return probabilities[:, :h, :w].float()


CORES.register("stm")(head_core(STMInferenceCore))


ONLINE_LOSSES.register("stm")(segmentation_online_loss)
