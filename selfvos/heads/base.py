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
frame's mask is given; zero-shot heads: every frame); losses live in ``selfvos.finetune.losses``.

Backbone modules are attributes whose name path contains ``backbone`` (the optimizer's backbone groups and
``--init`` from a pretrained checkpoint find them by that name).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from selfvos.config import ChoiceConfig
from selfvos.errors import SelfvosInputError
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


def head_core(core_class: Callable[[Any, Any], Any]) -> Callable[[Any, str, Mapping[str, Any]], Any]:
    """The core factory of a head (``CORES.register(name)(head_core(XInferenceCore))``): ``core_class(model,
    inference)`` with the model's ``config.inference`` dataclass, fields overridden by ``options["head"]``;
    an unknown field is a :class:`SelfvosInputError` listing the known ones."""

    def factory(model: Any, task: str, options: Mapping[str, Any]) -> Any:
        inference = model.config.inference
        overrides = dict(options.get("head") or {})
        known = {f.name for f in dataclasses.fields(inference)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise SelfvosInputError("head options", f"{type(model).__name__} has no inference setting(s) {unknown}; "
                                                    f"known: {sorted(known)}")
        return core_class(model, dataclasses.replace(inference, **overrides))

    return factory


def segmentation_online_loss(model: nn.Module, batch: Mapping[str, torch.Tensor], loss: Optional[Any] = None) -> torch.Tensor:
    """Online fine-tuning loss of a head (:mod:`selfvos.inference.online`, registered per architecture in
    ``ONLINE_LOSSES``): the training forward on pseudo-clips (view 0's mask given, views 1..T-1 segmented) scored
    by ``SegmentationLoss(loss)`` (a ``LossConfig``; default cross-entropy), exactly as the fine-tuning recipe."""
    from selfvos.finetune.losses import SegmentationLoss

    return SegmentationLoss(loss)(model, batch)["loss"]
