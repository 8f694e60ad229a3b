"""The head protocol: what every supervised VOS head on the shared backbone provides.

A head is an ``nn.Module`` with the Hub mixin and one dataclass config, registered by architecture name::

    @register_architecture
    class STM(VOSHead):
        architecture = "stm"
        tasks = ("one-shot",)
        info = ModelInfo(summary="...", papers=("stm",))
        def __init__(self, config: STMConfig) -> None: ...
        def forward(self, batch) -> {"logits": (B, T', K+1, H, W), "frames": (T',) long}
        def backbones(self) -> {"backbone": module, "memory_encoder.backbone": module}

    CORES.register("stm")(head_core(STMInferenceCore))   # STMInferenceCore(model, inference config)
    ONLINE_LOSSES.register("stm")(segmentation_online_loss)

Training batch (``selfvos.data.supervised``): ``frames`` (B, T, 3, H, W) in [0, 1], ``masks`` (B, T, H, W)
int64 ids (0 background, 1..K objects, 255 void), ``object_valid`` (B, K) bool. ``forward`` returns logits
over background + K objects for the clip frames listed in ``frames`` (one-shot heads: 1..T-1, the first
frame's mask is given); losses live in ``selfvos.finetune.losses`` (an ``aux_logits`` output of the same shape
adds ``aux_weight`` times the same terms).

Zero-shot heads (``tasks = ("zero-shot",)``, e.g. COSNet, LVO): ``forward(batch, offline=True)`` returns
(B, T, 2, H, W) background / foreground logits for every frame; their clips are binary (``masks`` in {0, 1, 255})
and, when the class sets ``needs_flow = True``, carry ``flows`` (B, T, 2, H, W): the optical flow of frame t to
t+1 (the last frame: to T-2). ``offline=False`` must not read frames after t+1. They register the generic
``selfvos.inference.video_core.video_head_core``, which runs whole videos in windows.

Backbone modules are attributes whose name path contains ``backbone`` (the optimizer's backbone groups and
``--init`` from a pretrained checkpoint find them by that name).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfvos.config import ChoiceConfig
from selfvos.hub.mixin import ModelInfo, SelfvosModelMixin

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class HeadConfig(ChoiceConfig):
    """Base of the heads' configs: each head registers its config under its architecture name
    (``@HeadConfig.register_subclass("stm")``), so a recipe chooses the head with ``model: {type: stm, ...}``."""


class VOSHead(SelfvosModelMixin, nn.Module):
    """Base class of the supervised heads: ImageNet normalisation and the backbone listing."""

    architecture: ClassVar[str]
    tasks: ClassVar[Tuple[str, ...]] = ()
    info: ClassVar[ModelInfo]

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> ImageNet-normalised, the input the backbones were pretrained on."""
        return (images - self.pixel_mean) / self.pixel_std

    def backbones(self) -> Dict[str, nn.Module]:
        """Dotted attribute path -> backbone module (ResNet trunks that ``--init`` fills from a checkpoint)."""
        return {name: module for name, module in self.named_modules()
                if name.split(".")[-1] == "backbone" and hasattr(module, "conv1")}


def one_hot_objects(masks: torch.Tensor, num_objects: int) -> torch.Tensor:
    """(B, H, W) int ids -> (B, K, H, W) float, channel k = (id == k + 1); void (255) and background are 0."""
    ids = torch.arange(1, num_objects + 1, device=masks.device).view(1, -1, 1, 1)
    return (masks.unsqueeze(1) == ids).float()


def bfloat16_native(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively (CUDA with bf16, or a CPU with AVX512-BF16 / AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class OneShotCore:
    """Base of the one-shot heads' inference cores: the model (eval), its inference settings, the video's object
    ids and what every one-shot step checks. A subclass keeps its per-video state (its ``reset`` calls
    ``super().reset()``) and implements ``step(frame, mask=None) -> (K+1, H, W)`` with :meth:`image` and
    :meth:`read_mask`.

    ``bfloat16``: autocast to bfloat16 when the settings have ``dtype="bfloat16"``, or ``"auto"`` on hardware
    that computes it natively.
    """

    def __init__(self, model: nn.Module, config: Any = None) -> None:
        self.model = model.eval()
        self.config = config if config is not None else model.config.inference
        dtype = getattr(self.config, "dtype", "float32")
        self.bfloat16 = dtype == "bfloat16" or (dtype == "auto" and bfloat16_native(self.device))
        self.reset()

    def reset(self) -> None:
        self._object_ids: List[int] = []

    @property
    def object_ids(self) -> List[int]:
        return list(self._object_ids)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def image(self, frame: np.ndarray, stride: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """(H, W, 3) uint8 -> ((1, 3, H', W') float in [0, 1], (H, W)), replicate-padded at the bottom / right so
        that H' and W' are multiples of ``stride``."""
        image = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        h, w = image.shape[-2:]
        pad_h, pad_w = (-h) % stride, (-w) % stride
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h), mode="replicate")
        return image, (h, w)

    def read_mask(self, mask: Optional[np.ndarray], first: bool) -> None:
        """Check a step's mask: the ``first`` step needs one and its ids (void 255 excluded) become the objects;
        a later mask may hold only those ids. ``ValueError`` otherwise."""
        name = type(self.model).__name__
        if first:
            if mask is None:
                raise ValueError(f"{name} is one-shot: the first step needs the first frame's mask")
            self._object_ids = [int(i) for i in np.unique(np.asarray(mask)) if i not in (0, 255)]
            if not self._object_ids:
                raise ValueError("the first mask has no object (only background / void)")
        elif mask is not None:
            unknown = sorted(set(int(i) for i in np.unique(mask)) - set(self._object_ids) - {0, 255})
            if unknown:
                raise ValueError(f"mask has object ids {unknown} not in the first frame's {self._object_ids}")


def head_core(core_class: Callable[[Any, Any], Any]) -> Callable[[Any, str, Mapping[str, Any]], Any]:
    """The core factory of a head (``CORES.register(name)(head_core(XInferenceCore))``): ``core_class(model,
    inference)`` with the model's ``config.inference`` dataclass, fields overridden by ``options["head"]``;
    an unknown field is a :class:`SelfvosInputError` listing the known ones."""

    def factory(model: Any, task: str, options: Mapping[str, Any]) -> Any:
        from selfvos.inference.core import inference_settings

        return core_class(model, inference_settings(model, options))

    return factory


def segmentation_online_loss(model: nn.Module, batch: Mapping[str, torch.Tensor], loss: Optional[Any] = None) -> torch.Tensor:
    """Online fine-tuning loss of a head (:mod:`selfvos.inference.online`, registered per architecture in
    ``ONLINE_LOSSES``): the training forward on pseudo-clips (view 0's mask given, views 1..T-1 segmented) scored
    by ``SegmentationLoss(loss)`` (a ``LossConfig``; default cross-entropy), exactly as the fine-tuning recipe."""
    from selfvos.finetune.losses import SegmentationLoss

    return SegmentationLoss(loss)(model, batch)["loss"]
