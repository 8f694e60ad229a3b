"""One-shot (semi-supervised) VOS by label propagation: the first-frame mask is carried through the video.

>>> propagator = OneShotPropagator(MuGModel(), OneShotConfig())
>>> for ids in propagator.propagate(frames, first_mask):     # (H, W) uint8 id masks, ids as given
...     ...
>>> probs = propagator.step(frame, mask=None)                # (K+1, H, W): background, object_ids...

The state (context bank, object ids) lives here, apart from the model (Cutie's ``InferenceCore.step``).
Per frame: resize so the short side is ``short_side``, embed (query, key) at the feature grid,
top-k local-window affinity to the context (first frame + last ``num_previous`` frames, see
``propagation.py``), soft labels at the feature grid, bilinear upsampling to the working size, edge-aware
refinement with a fast guided filter (``refine.py``; ``refine_radius=0`` turns it off), bilinear resizing
to the frame size, argmax. The context keeps the grid's soft labels, not the refined ones (the
sharpened labels drift when fed back).

Feature sources (``features``):
* ``model``: ``normalize(model.encode(image))``, by default averaged with the mirrored features of the
  mirror image (``flip_average``); affinity = cosine similarity.
* ``lab``: CIE Lab colour (kornia, D65) of the frame area-resized to a ``1/lab_stride`` grid, times
  ``lab_scale``. Raw colours have no meaningful dot product, so the affinity is the negative squared
  distance ``-|x_q - x_k|^2 / 2`` (plus a per-query constant that neither top-k nor softmax sees),
  computed as a dot product of ``query = [x, 1]`` and ``key = [x, -|x|^2 / 2]``.
* ``both``: the model embedding concatenated with ``sqrt(lab_weight)`` times the Lab pair at the model
  grid: affinity = cosine - lab_weight * |dLab * lab_scale|^2 / 2.

Labels: a given mask becomes one channel per object + background (void 255 counts as background on
the first frame) and is area-averaged straight from the frame size to the feature grid; the grid's
probabilities are upsampled bilinearly straight back to the frame size (at 854x480 the stride-8 grid
is 107 x 60, so the last column is 3/4 covered: a sub-cell misalignment, no crop).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from selfvos.data.video import VOID
from selfvos.inference.memory import ContextBank
from selfvos.inference.propagation import WINDOWS, LocalWindowAffinity, propagate_labels
from selfvos.inference.refine import GuidedRefiner

FEATURE_SOURCES = ("model", "lab", "both")
DTYPES = ("auto", "float32", "bfloat16")


@dataclass
class OneShotConfig:
    """Label-propagation settings (defaults: CRW-style protocol on ResNet-18 layer3 at stride 8, 854x480).

    Each frame is resized to ``short_side``, embedded (``features``), matched to the context (the annotated
    anchors + the last ``num_previous`` frames) by top-``topk`` affinity within a window of ``radius``
    feature cells, softmax at ``temperature``; the propagated probabilities are upsampled, refined with a
    guided filter (``refine_*``) and turned into ids (``object_gain``). How each default was chosen, with the
    measurements: docs/results.md.
    """

    features: str = "model"  # embedding: "model" (backbone features) | "lab" (raw colour) | "both" (concatenated)
    num_previous: int = 3  # previous frames kept in the context besides the anchors
    topk: int = 10  # context positions each query cell takes its label from
    temperature: float = 0.07  # softmax temperature of the top-k affinities
    radius: int = 16  # local window radius in feature cells (128 px at the 480p working size)
    window: str = "square"  # "square" (|dy|, |dx| <= r) | "disk" (dy^2 + dx^2 <= r^2)
    short_side: Optional[int] = 480  # frames resized so the short side is this before encoding; None = as given
    lab_stride: int = 8  # grid of the "lab" source: 1/lab_stride of the resized frame
    lab_scale: float = 0.1  # Lab units -> feature units (a difference of 10 Lab units = 1)
    lab_weight: float = 1.0  # weight of the Lab term for features="both"
    max_anchors: int = 3  # annotated frames kept: the first forever + the latest later ones
    # model features = normalised mean of the frame's and its mirror image's (mirrored back): one batched
    # backbone call of 2 images
    flip_average: bool = True
    # decision rule of the output ids: argmax over (p_background, g p_1, ..., g p_K) with g = object_gain
    # (one object: foreground where p > 1 / (1 + g)); the probabilities and the context labels stay as they are
    object_gain: float = 1.0
    # extra encode scales (relative to the working size) whose features, resized to the working grid, join the
    # average (with their mirror images when flip_average is on); () = the working size only
    extra_scales: Tuple[float, ...] = ()
    # guided-filter refinement of the upsampled probabilities (refine.py): radius in working-size pixels
    # (0 = plain bilinear upsampling), ridge eps, fast-filter subsampling
    refine_radius: int = 16
    refine_eps: float = 1e-5
    refine_subsample: int = 4
    tile: Optional[int] = None  # query tile of the windowed affinity (default max(radius, 4))
    # "auto": bfloat16 where oneDNN (AVX512-BF16 / AMX) or CUDA run it natively, else float32; or "float32" /
    # "bfloat16" explicitly
    affinity_dtype: str = "auto"  # the bf16 affinity is used for unit-norm model features only ("auto")
    encode_dtype: str = "auto"  # backbone autocast

    def __post_init__(self) -> None:
        if self.features not in FEATURE_SOURCES:
            raise ValueError(f"features must be one of {FEATURE_SOURCES}, got {self.features!r}")
        if self.window not in WINDOWS:
            raise ValueError(f"window must be one of {WINDOWS}, got {self.window!r}")
        for name in ("affinity_dtype", "encode_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(f"{name} must be one of {DTYPES}, got {getattr(self, name)!r}")
        self.extra_scales = tuple(float(x) for x in self.extra_scales)
        if any(x <= 0 for x in self.extra_scales) or (self.extra_scales and self.features == "lab"):
            raise ValueError(f"extra_scales must be positive, for model features only, got {self.extra_scales}")
        if self.temperature <= 0 or self.object_gain <= 0 or self.topk < 1 or self.num_previous < 0 \
                or self.lab_stride < 1:
            raise ValueError(f"invalid one-shot config: {self}")

    @classmethod
    def lab_floor(cls) -> "OneShotConfig":
        """The no-learning floor: raw Lab colour at 1/4 of 240p, first + 5 previous frames, top-10, radius 6,
        temperature 0.05, no refinement, no flip averaging."""
        return cls(features="lab", num_previous=5, topk=10, temperature=0.05, radius=6, short_side=240, lab_stride=4,
                   refine_radius=0, flip_average=False)


def lab_pair(image: torch.Tensor, size: Tuple[int, int], scale: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Lab (query, key) of an image (1, 3, H, W) in [0, 1] at grid ``size``: ([x, 1], [x, -|x|^2/2]), (4, h, w) each."""
    from kornia.color import rgb_to_lab

    x = rgb_to_lab(F.interpolate(image, size=size, mode="area").clamp(0, 1))[0] * scale
    query = torch.cat([x, torch.ones_like(x[:1])])
    key = torch.cat([x, -0.5 * (x * x).sum(0, keepdim=True)])
    return query, key


def ids_from_probabilities(probs: torch.Tensor, object_ids: List[int], object_gain: float = 1.0) -> np.ndarray:
    """Probabilities (K+1, H, W), channel 0 background, channel i ``object_ids[i-1]`` -> (H, W) uint8 ids
    (argmax, the object channels multiplied by ``object_gain`` first)."""
    table = torch.tensor([0, *object_ids], dtype=torch.uint8)
    if object_gain != 1.0:
        probs = torch.cat([probs[:1], probs[1:] * object_gain])
    return table[probs.max(0).indices.cpu()].numpy()  # the first maximum, like argmax, ~10x faster on CPU


def bfloat16_is_native(device: torch.device) -> bool:
    """True where bfloat16 convolutions run natively: CUDA with bf16 support, CPUs whose oneDNN has bf16
    kernels (AVX512-BF16 / AMX). Elsewhere bf16 is emulated and slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class FeatureEmbedding:
    """image (1, 3, H, W) in [0, 1] -> (query, key), each (C, h, w); see the module docstring."""

    def __init__(self, model: Optional[torch.nn.Module], cfg: OneShotConfig) -> None:
        if cfg.features != "lab" and model is None:
            raise ValueError(f"features={cfg.features!r} needs a model with encode(images)")
        self.model, self.cfg = model, cfg
        self.device = next(model.parameters()).device if model is not None else torch.device("cpu")
        native = cfg.encode_dtype == "auto" and bfloat16_is_native(self.device)
        self.bfloat16 = cfg.encode_dtype == "bfloat16" or native

    def __call__(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        image = image.to(self.device)
        if cfg.features == "lab":
            size = (math.ceil(image.shape[-2] / cfg.lab_stride), math.ceil(image.shape[-1] / cfg.lab_stride))
            return lab_pair(image, size, cfg.lab_scale)
        features = self._views(image)
        for scale in cfg.extra_scales:
            size = (round(image.shape[-2] * scale), round(image.shape[-1] * scale))
            small = F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)
            other = F.interpolate(self._views(small)[None], size=features.shape[-2:], mode="bilinear",
                                  align_corners=False)[0]
            features = features + other
        if cfg.extra_scales:
            features = F.normalize(features, dim=0)
        if cfg.features == "model":
            return features, features
        query, key = lab_pair(image, tuple(features.shape[-2:]), cfg.lab_scale)
        weight = math.sqrt(cfg.lab_weight)
        return torch.cat([features, weight * query]), torch.cat([features, weight * key])

    def _views(self, image: torch.Tensor) -> torch.Tensor:
        """Unit-norm features (C, h, w) of ``image`` (1, 3, H, W), flip-averaged when configured."""
        batch = torch.cat([image, image.flip(-1)]) if self.cfg.flip_average else image
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bfloat16):
            encoded = F.normalize(self.model.encode(batch).float(), dim=1)
        return encoded[0] if len(encoded) == 1 else F.normalize(encoded[0] + encoded[1].flip(-1), dim=0)


class OneShotPropagator:
    """Propagates given masks through a video, frame by frame; object ids are kept exactly.

    ``model``: anything with ``encode(images (B, 3, H, W) in [0, 1]) -> (B, C, h, w)`` (a
    :class:`~selfvos.pretrain.MuGModel`; put in eval mode here), or None for ``features="lab"``.
    """

    def __init__(self, model: Optional[torch.nn.Module] = None, cfg: Optional[OneShotConfig] = None) -> None:
        self.cfg = cfg or OneShotConfig()
        if model is not None:
            model.eval()
        self.embed = FeatureEmbedding(model, self.cfg)
        dtype = self.cfg.affinity_dtype
        if dtype == "auto":  # raw Lab colours need float32's precision in the squared-distance affinity
            native = self.cfg.features == "model" and bfloat16_is_native(self.embed.device)
            dtype = "bfloat16" if native else "float32"
        self.affinity_dtype = getattr(torch, dtype)
        self.affinity = LocalWindowAffinity(self.cfg.radius, self.cfg.topk, self.cfg.window, self.cfg.tile)
        self.bank = ContextBank(self.cfg.num_previous, self.cfg.max_anchors)
        self.refine = GuidedRefiner(self.cfg.refine_radius, self.cfg.refine_eps, self.cfg.refine_subsample)
        self.reset()

    def reset(self) -> None:
        """Forget the video: empty context, no objects."""
        self.bank.clear()
        self._object_ids: List[int] = []
        self.frame_index = 0

    @property
    def object_ids(self) -> List[int]:
        """Object ids in channel order: ``step`` returns channel 0 = background, channel i = object_ids[i-1]."""
        return list(self._object_ids)

    def _prepare(self, frame: np.ndarray) -> torch.Tensor:
        if not (isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8):
            raise ValueError(f"frame must be a uint8 (H, W, 3) array, got {getattr(frame, 'dtype', type(frame))} "
                             f"{getattr(frame, 'shape', '')}")
        image = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float() / 255.0
        short = self.cfg.short_side
        if short and min(frame.shape[:2]) != short:
            scale = short / min(frame.shape[:2])
            size = (round(frame.shape[0] * scale), round(frame.shape[1] * scale))
            image = F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)
        return image

    @torch.no_grad()
    def step(self, frame: np.ndarray, mask: Optional[np.ndarray] = None) -> torch.Tensor:
        """Segment one frame: (H, W, 3) uint8 [+ (H, W) uint8 ids] -> probabilities (K+1, H, W).

        The first frame needs a mask. A mask on a later frame sets the objects it contains (new ids are
        added) and leaves the other objects to propagation; 0 and 255 (void) in it mean "not given".
        """
        if mask is None and self.frame_index == 0:
            raise ValueError("the first frame needs a mask: step(frame, mask)")
        image = self._prepare(frame)
        size = frame.shape[:2]
        query, key = (x.to(self.affinity_dtype) for x in self.embed(image))
        grid = tuple(query.shape[-2:])
        probs = None
        if len(self.bank):
            values, indices = self.affinity.topk(query, self.bank.keys())
            soft = propagate_labels(values, indices, self.bank.labels(), self.cfg.temperature, grid,
                                    self.bank.known().to(values.device))
            probs = self._upsample(soft, image, size)
        if mask is not None:
            probs = self._apply_mask(mask, probs, size)
            soft = F.interpolate(probs[None], size=grid, mode="area")[0]
        self.bank.add(self.affinity.tile_keys(key), soft, self.frame_index, anchor=mask is not None)
        self.frame_index += 1
        return probs

    def _upsample(self, soft: torch.Tensor, image: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        """Grid labels (L, h, w) -> (L, H, W) at the frame size, refined against the working-size image."""
        if not self.refine.enabled:
            return F.interpolate(soft[None], size=size, mode="bilinear", align_corners=False)[0]
        work = F.interpolate(soft[None].float(), size=image.shape[-2:], mode="bilinear", align_corners=False)[0]
        work = self.refine(image, work)
        if tuple(work.shape[-2:]) != tuple(size):
            work = F.interpolate(work[None], size=size, mode="bilinear", align_corners=False)[0]
        return work

    def _apply_mask(self, mask: np.ndarray, probs: Optional[torch.Tensor], size: Tuple[int, int]) -> torch.Tensor:
        """Merge a given id mask into the propagated probabilities (None: nothing propagated yet)."""
        if mask.shape != size or mask.dtype != np.uint8:
            raise ValueError(f"mask must be uint8 {size} like its frame, got {mask.dtype} {mask.shape}")
        ids = torch.from_numpy(np.ascontiguousarray(mask)).long()
        given = [int(i) for i in torch.unique(ids).tolist() if i not in (0, VOID)]
        self._object_ids += [i for i in given if i not in self._object_ids]
        channels = 1 + len(self._object_ids)
        self.bank.grow_labels(channels)
        if probs is None:
            probs = torch.zeros(channels, *size)
            probs[0] = 1.0
        probs = F.pad(probs.cpu(), (0, 0, 0, 0, 0, channels - probs.shape[0]))
        lut = torch.zeros(256, dtype=torch.long)
        lut[torch.tensor(self._object_ids, dtype=torch.long)] = torch.arange(1, channels)
        given_channels = lut[torch.tensor(given, dtype=torch.long)]
        probs[given_channels] = 0.0  # given objects are exactly their mask
        total = probs.sum(0, keepdim=True)
        probs = torch.where(total > 0, probs / total.clamp_min(1e-12), F.one_hot(torch.zeros(size, dtype=torch.long),
                                                                                    channels).permute(2, 0, 1).float())
        labelled = (ids != 0) & (ids != VOID)
        onehot = F.one_hot(lut[ids], channels).permute(2, 0, 1).float()
        return torch.where(labelled, onehot, probs).to(self.embed.device)

    def to_ids(self, probs: torch.Tensor) -> np.ndarray:
        """Probabilities (K+1, H, W) -> (H, W) uint8 object ids (argmax; 0 = background)."""
        return ids_from_probabilities(probs, self._object_ids, self.cfg.object_gain)

    def propagate(self, frames: Iterable[np.ndarray], first_mask: np.ndarray) -> Iterator[np.ndarray]:
        """Reset, then yield the (H, W) uint8 id mask of every frame (the first is ``first_mask``'s objects)."""
        self.reset()
        for index, frame in enumerate(frames):
            yield self.to_ids(self.step(frame, first_mask if index == 0 else None))
