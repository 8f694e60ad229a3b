"""RVOS: end-to-end recurrent network for multi-object VOS (Ventura, Bellver, Girbau, Salvador, Marques, Giro-i-Nieto,
CVPR 2019) on the shared selfvos backbone, one-shot and zero-shot.

Network (``RVOS``, architecture ``"rvos"``), ``L`` scales coarse to fine (default the ResNet-18 ``layer4 ..
layer1`` maps at 1/32, 1/16, 1/8, 1/4):

- encoder: the backbone (``self.backbone``) on the ImageNet-normalised frame; each skip map is projected by a 1x1
  convolution to ``skip_dim`` channels: ``f'_{t,k}`` (B, skip_dim, h_k, w_k), computed once per frame and shared by
  every object;
- hierarchical ConvLSTM decoder (:class:`~selfvos.heads.rvos_decoder.RVOSDecoder`; 3x3 kernels, one ConvLSTM
  per scale, run once per object i and frame t)::

      h_input(t, i, k) = [f'_{t,k} | B(h_{t,i,k-1}) | S_{t-1,i} | h_{t-1,i,k}]    (k = 0: no B(h))
      (h_{t,i,k}, c_{t,i,k}) = ConvLSTM_k(h_input, (h, c)_{t,i-1,k})               (i = 0 / t = 0: zeros)

  with ``B`` the bilinear upsampling to scale k and ``S_{t-1,i}`` (one-shot only) object i's mask of the previous
  frame, area-resized to scale k: the temporal recurrence enters as an input, the spatial recurrence over objects
  as the cell state (how the released code combines the two). The gates are computed part by part (the
  convolution is linear): the skip term once per frame, the mask and temporal terms batched over the objects, only
  the ``[B(h_{t,i,k-1}) | h_{t,i-1,k}]`` term per object; the spatial recurrence stays sequential;
- per object: a 1x1 convolution of the finest hidden map -> foreground logit ``z_{t,i}`` at 1/4, bilinear to
  (H, W); zero-shot adds a stop logit per slot, a linear layer on ``[maxpool(h_{t,i,0}) | ... |
  maxpool(h_{t,i,L-1})]`` (global max-pooling, as RSIS).

One-shot (``mode="one_shot"``): objects are the K ground-truth ids in order; ``forward(batch)`` runs frame 0 with
its ground-truth masks as ``S`` (to start the temporal states; not scored), then frames 1..T-1 and returns
``{"logits": (B, T-1, K+1, H, W), "frames": arange(1, T)}``, the K foreground logits soft-aggregated
(:func:`~selfvos.layers.soft_aggregate`) with the background. ``S_{t-1}``: the ground-truth masks for the first
``teacher_forcing_steps`` training forward calls (counted in the persistent buffer ``train_calls``, so it is in the
checkpoint and a resumed run keeps the schedule), afterwards (and always in eval mode) the model's own soft
probabilities of frame t-1 (``softmax(logits)[1:]``, detached).

Zero-shot (``mode="zero_shot"``): no mask input; N = ``max_instances`` slots are decoded per frame (slot i's
spatial state from slot i-1, its temporal state from slot i at t-1). Training (``forward(batch)``, masks with
instance ids 1..K): each sample's slots are matched to its K valid instances by the Hungarian algorithm
(``scipy.optimize.linear_sum_assignment``, under no_grad) on the cost ``1 - softIoU(i, k)`` over the whole clip,
``softIoU = sum p y v / sum (p + y - p y) v`` with ``p = sigmoid(z)``, ``y`` the instance mask, ``v`` the non-void
pixels; with ``match_first_slots`` (RSIS's ``n~ = min(n^, n)``, default) only the first min(N, K) slots enter the
matching (on the slot probabilities upsampled to (H, W), under no_grad). The matched slot logits are placed at channel
k (unmatched slots are dropped before their upsampling, an instance without a slot gets logit -1e4) and
soft-aggregated: ``{"logits": (B, T, K+1, H, W), "frames": arange(T)}``. The stop loss
``extra_loss = stop_weight * mean_{b, t, i} BCE(s_{t,i}, [i >= K_b])`` (slot i should stop iff i >= K) is added by
:class:`~selfvos.finetune.losses.SegmentationLoss`. ``assignment`` (B, K) gives the slot of each instance (-1: none).

Inference: ``create_core(model, "one-shot")`` -> :class:`RVOSInferenceCore` (state: the previous frame's hidden maps
of every object and scale + the previous soft masks, flat in the video length); ``create_core(model, "zero-shot")``
-> :class:`RVOSZeroShotCore`, whose ``segment_video`` yields (H, W) uint8 instance ids: slot i is instance i + 1
while its stop probability is < ``stop_threshold`` (decoding of instances ends at the first slot that stops), the
temporal recurrence keeping slot identities from frame to frame. A model trained one-shot (it reads masks) runs
one-shot only, a zero-shot one zero-shot only (``SelfvosInputError`` otherwise).

Faithful: the encoder-decoder structure, the spatial + temporal recurrences and their combination, the mask input
channel of the one-shot model, Hungarian matching on soft IoU, the stop score, training first with ground-truth
then with its own previous masks. Reduced versus the paper (CPU budget): ResNet-18 instead of ResNet-101,
``skip_dim`` 32 and ``hidden`` (64, 64, 32, 16) instead of the paper's wider decoder, 3-frame clips at 192x320
instead of 5 frames at 256x448, the teacher-forcing switch after a number of steps instead of 20 + 20 epochs; the
zero-shot loss is the platform's cross-entropy (+ soft IoU if configured) on the matched slots instead of RSIS's
soft-IoU-only mask loss, and the RSIS box / class branches and the curriculum over the number of objects are left
out. Added: ``mask_prior`` (one-shot) initialises the decoder to copy the previous mask, which the paper's random
initialisation does not learn within a CPU budget.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfvos.backbones import BackboneConfig, backbone_from_config
from selfvos.errors import SelfvosInputError
from selfvos.heads.base import HeadConfig, OneShotCore, VOSHead, one_hot_objects, segmentation_online_loss
from selfvos.heads.rvos_decoder import HiddenMaps, RVOSDecoder, match_slots, stop_targets
from selfvos.hub.mixin import ModelInfo, register_architecture
from selfvos.layers import soft_aggregate
from selfvos.registry import CORES, ONLINE_LOSSES

MODES = ("one_shot", "zero_shot")
VOID = 255


@dataclass
class RVOSInferenceConfig:
    """Test-time settings.

    stop_threshold: zero-shot: a slot is an instance while sigmoid(stop logit) < stop_threshold.
    max_side: zero-shot: longest side frames are processed at (0 = the frame size); ``Segmenter(max_side=...)``
        overrides it.
    dtype: ``"auto"`` (bfloat16 backbone where native) | ``"float32"`` | ``"bfloat16"``; the decoder runs in float32.
    """

    stop_threshold: float = 0.5
    max_side: int = 432
    dtype: str = "auto"

    def __post_init__(self) -> None:
        if not 0.0 < float(self.stop_threshold) < 1.0:
            raise ValueError(f"stop_threshold must be in (0, 1), got {self.stop_threshold!r}")
        if int(self.max_side) != self.max_side or self.max_side < 0:
            raise ValueError(f"max_side must be an integer >= 0, got {self.max_side!r}")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"dtype must be auto, float32 or bfloat16, got {self.dtype!r}")


@HeadConfig.register_subclass("rvos")
@dataclass
class RVOSConfig(HeadConfig):
    """Architecture and training of :class:`RVOS` (see the module docstring).

    mode: what the model is trained for and runs: ``"one_shot"`` (previous mask as an input channel) or
        ``"zero_shot"`` (slots + stop scores, Hungarian-matched training).
    backbone: the encoder; ``return_layers`` are the skip scales (fine to coarse, as the backbone lists them).
    skip_dim: channels of the projected skips ``f'``. hidden: ConvLSTM channels per scale, coarse to fine (one per
        return layer).
    max_instances: zero-shot slots N per frame.
    teacher_forcing_steps: one-shot: training forward calls that get the ground-truth previous masks.
    match_first_slots: zero-shot: only the first min(N, K) slots enter the matching (RSIS); else all N.
    stop_weight: weight of the stop BCE (``extra_loss``).
    mask_prior: one-shot: > 0 starts the decoder as "copy the previous mask" with this gate strength
        (:meth:`RVOSDecoder.init_mask_prior`); 0 is the plain random initialisation of the paper.
    """

    mode: str = "one_shot"
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(
        name="resnet18", output_stride=32, return_layers=("layer1", "layer2", "layer3", "layer4")))
    skip_dim: int = 32
    hidden: Tuple[int, ...] = (64, 64, 32, 16)
    max_instances: int = 10
    teacher_forcing_steps: int = 200
    match_first_slots: bool = True
    stop_weight: float = 1.0
    mask_prior: float = 0.0
    inference: RVOSInferenceConfig = field(default_factory=RVOSInferenceConfig)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        self.hidden = tuple(int(h) for h in self.hidden)
        if len(self.hidden) != len(self.backbone.return_layers):
            raise ValueError(f"hidden needs one size per return layer ({len(self.backbone.return_layers)}), "
                             f"got {self.hidden}")
        if self.max_instances < 1 or self.teacher_forcing_steps < 0 or self.stop_weight < 0 or self.mask_prior < 0:
            raise ValueError(f"need max_instances >= 1, teacher_forcing_steps >= 0, stop_weight >= 0, mask_prior >= 0, "
                             f"got {self}")


@register_architecture
class RVOS(VOSHead):
    """RVOS; see the module docstring. ``forward(batch)`` trains; the cores infer."""

    architecture = "rvos"
    tasks = ("one-shot", "zero-shot")
    zero_shot_instances = True  # its zero-shot output is instance ids (validation scores it multi-object)
    info = ModelInfo(summary="an RVOS multi-object VOS head (Ventura et al., CVPR 2019): ResNet encoder, "
                             "hierarchical ConvLSTM decoder recurrent over objects (spatial) and frames (temporal); "
                             "one-shot with the previous mask as input, or zero-shot instance slots with a stop "
                             "score trained by Hungarian matching.",
                     papers=("rvos",),
                     limitation="A model runs the task it was trained for (config mode): one-shot or zero-shot.")

    @classmethod
    def training_task(cls, config: RVOSConfig) -> str:
        """The task a config trains (and validates) for: ``"one-shot"`` or ``"zero-shot"``."""
        return "zero-shot" if config.mode == "zero_shot" else "one-shot"

    def __init__(self, config: Optional[RVOSConfig] = None) -> None:
        super().__init__()
        self.config = cfg = config or RVOSConfig()
        self.backbone = backbone_from_config(cfg.backbone)
        layers = list(reversed(self.backbone.return_layers))  # coarse to fine
        self.layers = layers
        self.project = nn.ModuleList([nn.Conv2d(self.backbone.out_channels[name], cfg.skip_dim, 1) for name in layers])
        self.zero_shot = cfg.mode == "zero_shot"
        self.decoder = RVOSDecoder(cfg.skip_dim, cfg.hidden, mask_input=not self.zero_shot, stop=self.zero_shot)
        self.decoder.init_mask_prior(cfg.mask_prior)
        self.register_buffer("train_calls", torch.zeros((), dtype=torch.long))

    @property
    def stride(self) -> int:
        """Input multiple that keeps every scale aligned (the coarsest map's stride)."""
        natural = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}[self.layers[0]]
        return min(natural, max(self.config.backbone.output_stride, 4))

    # --- the parts ----------------------------------------------------------------------------------------
    def encode(self, frames: torch.Tensor, bfloat16: bool = False) -> List[torch.Tensor]:
        """(N, 3, H, W) in [0, 1] -> projected skips coarse to fine, each (N, skip_dim, h_k, w_k) float32."""
        with torch.autocast(frames.device.type, dtype=torch.bfloat16, enabled=bfloat16):
            feats = self.backbone(self.normalize(frames))
        return [proj(feats[name].float()) for proj, name in zip(self.project, self.layers)]

    def decode_frame(self, skips: Sequence[torch.Tensor], count: int, masks: Optional[torch.Tensor] = None,
                     temporal: Optional[HiddenMaps] = None
                     ) -> Tuple[torch.Tensor, Optional[torch.Tensor], HiddenMaps]:
        """One frame, ``count`` objects / slots in order (spatial recurrence, :class:`RVOSDecoder`).

        skips: ``encode`` output of B frames; masks (B, count, H, W) previous masks (one-shot) or None; temporal:
        the previous frame's hidden maps (per scale (B, count, D_k, h_k, w_k)), or None. Returns the foreground
        logits (B, count, h, w) at the finest scale, the stop logits (B, count) (zero-shot, else None) and this
        frame's hidden maps.
        """
        return self.decoder(skips, count, masks, temporal)

    # --- training -----------------------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
        """One-shot: logits (B, T-1, K+1, H, W) of frames 1..T-1; zero-shot: Hungarian-permuted logits (B, T, K+1,
        H, W) of every frame + ``extra_loss`` (stop BCE). See the module docstring."""
        frames, masks = batch["frames"], batch["masks"]
        b, t = frames.shape[:2]
        valid = batch.get("object_valid")
        k = valid.shape[1] if valid is not None else int(masks[masks != VOID].max().clamp(min=1))
        size = tuple(frames.shape[-2:])
        skips = self.encode(frames.flatten(0, 1))
        skips = [x.reshape(b, t, *x.shape[1:]) for x in skips]
        if self.zero_shot:
            return self._forward_zero_shot(skips, masks, valid, k, size)
        if t < 2:
            raise ValueError(f"one-shot RVOS trains on clips of at least 2 frames, got {t}")
        use_truth = False
        if self.training:
            use_truth = int(self.train_calls) < self.config.teacher_forcing_steps
            self.train_calls += 1
        previous = one_hot_objects(masks[:, 0], k)
        temporal = None
        outputs = []
        for i in range(t):
            logits, _, temporal = self.decode_frame([x[:, i] for x in skips], k, previous, temporal)
            if i == 0:  # frame 0's mask is given: it stays the previous mask of frame 1
                continue
            logits = soft_aggregate(F.interpolate(logits, size=size, mode="bilinear", align_corners=False), valid)
            outputs.append(logits)
            if i < t - 1:
                previous = one_hot_objects(masks[:, i], k) if use_truth else torch.softmax(logits.detach(), 1)[:, 1:]
        return {"logits": torch.stack(outputs, dim=1), "frames": torch.arange(1, t, device=frames.device)}

    def _forward_zero_shot(self, skips: List[torch.Tensor], masks: torch.Tensor, valid: Optional[torch.Tensor],
                           k: int, size: Tuple[int, int]) -> Dict[str, Any]:
        b, t = masks.shape[:2]
        n = self.config.max_instances
        temporal = None
        slot_logits, stop_logits = [], []
        for i in range(t):
            logits, stops, temporal = self.decode_frame([x[:, i] for x in skips], n, None, temporal)
            slot_logits.append(logits)
            stop_logits.append(stops)
        z = torch.stack(slot_logits, dim=1)  # (B, T, N, h, w) at the finest scale
        stops = torch.stack(stop_logits, dim=1)  # (B, T, N)
        if valid is None:
            valid = torch.ones(b, k, dtype=torch.bool, device=masks.device)
        assignment = match_slots(z, masks, valid, self.config.match_first_slots)
        # bilinear upsampling is per channel: gather the matched slots, then upsample K maps instead of N
        index = assignment.clamp(min=0)[:, None, :, None, None].expand(b, t, k, *z.shape[-2:])
        chosen = F.interpolate(torch.gather(z, 2, index).flatten(0, 1), size=size, mode="bilinear",
                               align_corners=False).reshape(b, t, k, *size)
        matched = torch.where((assignment >= 0)[:, None, :, None, None], chosen,
                              torch.full_like(chosen, -1e4))
        logits = soft_aggregate(matched.flatten(0, 1), valid.repeat_interleave(t, dim=0))
        targets = stop_targets(valid.sum(1), n)[:, None].expand_as(stops)
        stop_loss = F.binary_cross_entropy_with_logits(stops.float(), targets)
        return {"logits": logits.reshape(b, t, k + 1, *size), "frames": torch.arange(t, device=masks.device),
                "extra_loss": self.config.stop_weight * stop_loss, "stop_logits": stops, "assignment": assignment}


def _padded(image: torch.Tensor, stride: int) -> torch.Tensor:
    h, w = image.shape[-2:]
    pad_h, pad_w = (-h) % stride, (-w) % stride
    return F.pad(image, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else image


class RVOSInferenceCore(OneShotCore):
    """Per-video one-shot RVOS state: object ids, each object's hidden maps of the previous frame (every scale) and
    the previous soft masks (``state_numel`` is flat in the video length). ``step(frame, mask=None) -> (K+1, H, W)``.

    The first step's mask starts the video (its ids, void 255 excluded, are the objects; the frame is decoded with
    it as the "previous" mask to start the temporal states); a later mask is a correction: it is returned as given
    and becomes the previous mask of the next frame. Frames are padded (replicate) to the model's stride.
    """

    def reset(self) -> None:
        super().reset()
        self._hidden: Optional[HiddenMaps] = None
        self._previous: Optional[torch.Tensor] = None

    @property
    def state_numel(self) -> int:
        """Number of values held for the video (hidden maps + previous masks)."""
        if self._hidden is None:
            return 0
        return sum(h.numel() for h in self._hidden) + self._previous.numel()

    def _mask_probabilities(self, mask: np.ndarray, padded: Tuple[int, int]) -> torch.Tensor:
        ids = torch.from_numpy(np.asarray(mask, dtype=np.int64)).to(self.device)
        h, w = ids.shape
        one_hot = torch.stack([(ids == i).float() for i in self._object_ids])
        one_hot = F.pad(one_hot, (0, padded[1] - w, 0, padded[0] - h))
        return torch.cat([1.0 - one_hot.sum(0, keepdim=True).clamp(max=1.0), one_hot])  # (K+1, H', W')

    @torch.inference_mode()
    def step(self, frame: np.ndarray, mask: Optional[np.ndarray] = None) -> torch.Tensor:
        image, (h, w) = self.image(frame, self.model.stride)
        padded = tuple(image.shape[-2:])
        first = self._hidden is None
        self.read_mask(mask, first=first)
        k = len(self._object_ids)
        skips = self.model.encode(image, self.bfloat16)
        given = self._mask_probabilities(mask, padded) if mask is not None else None
        previous = given[None, 1:] if first else self._previous
        logits, _, self._hidden = self.model.decode_frame(skips, k, previous, self._hidden)
        if given is not None:
            probabilities = given
        else:
            logits = F.interpolate(logits, size=padded, mode="bilinear", align_corners=False)
            probabilities = torch.softmax(soft_aggregate(logits), dim=1)[0]
        self._previous = probabilities[None, 1:]
        return probabilities[:, :h, :w].float()


class RVOSZeroShotCore:
    """Zero-shot RVOS on whole videos: ``segment_video(video)`` yields (H, W) uint8 instance ids per frame (slot i ->
    id i + 1 while its stop probability < ``stop_threshold``; the first stopping slot ends the frame's instances).
    Frames are shrunk to ``max_side`` and padded to the model's stride; logits are upsampled to the frame size.
    ``object_ids``: the ids produced so far in the current video."""

    def __init__(self, model: RVOS, config: RVOSInferenceConfig) -> None:
        from selfvos.heads.base import bfloat16_native

        self.model = model.eval()
        self.config = config
        dtype = config.dtype
        self.bfloat16 = dtype == "bfloat16" or (dtype == "auto" and bfloat16_native(self.device))
        self.reset()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def object_ids(self) -> List[int]:
        return sorted(self._seen)

    def reset(self) -> None:
        self._seen: set = set()
        self._hidden: Optional[HiddenMaps] = None

    @property
    def state_numel(self) -> int:
        """Values held between frames (every slot's hidden maps)."""
        return 0 if self._hidden is None else sum(h.numel() for h in self._hidden)

    def step(self, frame: np.ndarray, mask: Optional[np.ndarray] = None) -> torch.Tensor:
        raise SelfvosInputError("rvos", "the zero-shot rvos core segments whole videos, not single frames; use "
                                        "Segmenter.segment_video (or `selfvos segment`)")

    def frame_ids(self, frame: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (H, W) uint8 instance ids of this frame (advances the temporal state)."""
        return self.frame_instances(frame)[0]

    @torch.inference_mode()
    def frame_instances(self, frame: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 -> ((H, W) uint8 instance ids, (N,) float32 stop probability ``sigmoid(s_i)`` of every
        slot i, instance id i + 1 being slot i) of this frame (advances the temporal state)."""
        from selfvos.data.image_io import shrink_frame

        size = frame.shape[:2]
        small = shrink_frame(frame, self.config.max_side or None)
        image = torch.from_numpy(np.ascontiguousarray(small)).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        h, w = image.shape[-2:]
        image = _padded(image, self.model.stride)
        n = self.model.config.max_instances
        logits, stops, self._hidden = self.model.decode_frame(self.model.encode(image, self.bfloat16), n, None,
                                                              self._hidden)
        stop = torch.sigmoid(stops[0])
        stopped = (stop >= self.config.stop_threshold).nonzero()
        count = int(stopped[0, 0]) if len(stopped) else n
        if count == 0:
            return np.zeros(size, np.uint8), stop.float().cpu().numpy()
        logits = F.interpolate(logits[:, :count], size=image.shape[-2:], mode="bilinear", align_corners=False)
        logits = F.interpolate(logits[..., :h, :w], size=size, mode="bilinear", align_corners=False)
        ids = soft_aggregate(logits)[0].argmax(0)
        self._seen.update(int(i) for i in torch.unique(ids) if int(i))
        return ids.to(torch.uint8).cpu().numpy(), stop.float().cpu().numpy()

    def segment_video(self, video: Any, progress: bool = False) -> Iterator[np.ndarray]:
        from tqdm.auto import tqdm

        self.reset()
        for index in tqdm(range(len(video)), desc=f"zero-shot {video.name}", unit="frame", disable=not progress):
            yield self.frame_ids(video.frame(index))


def rvos_core(model: RVOS, task: str, options: Mapping[str, Any]) -> Any:
    """The ``CORES`` factory: the one-shot core for a one-shot model, the zero-shot core for a zero-shot one
    (``options["head"]`` overrides ``config.inference``, ``options["max_side"]`` its ``max_side``)."""
    import dataclasses

    from selfvos.inference.core import inference_settings

    trained = RVOS.training_task(model.config)
    if task != trained:
        raise SelfvosInputError("rvos", f"this rvos model was trained {trained} (config mode {model.config.mode!r}): "
                                        f"it runs {trained} only, not {task}")
    settings = inference_settings(model, options)
    if task == "one-shot":
        return RVOSInferenceCore(model, settings)
    if options.get("max_side") is not None:
        settings = dataclasses.replace(settings, max_side=int(options["max_side"]))
    return RVOSZeroShotCore(model, settings)


CORES.register("rvos")(rvos_core)


ONLINE_LOSSES.register("rvos")(segmentation_online_loss)
