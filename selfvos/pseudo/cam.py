"""Class activation maps (Zhou et al., CVPR 2016) from a classifier: pseudo-masks for the weakly
supervised setting (image-level labels only).

For a network ``... -> final conv features F (B, C, h, w) -> global average pool -> fc (K, C)``, the CAM
of class k is ``M_k = sum_c w_kc F_c`` (B, h, w). Here k is the top-scoring class of each image; the map
is min-max normalised to [0, 1] per image and bilinearly upsampled to the input size.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfvos.data.video import LazyVideo
from selfvos.errors import SelfvosInputError
from selfvos.pseudo.base import PseudoLabeler, downscale, upsample_map

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def class_activation_map(features: torch.Tensor, fc_weight: torch.Tensor, class_index: torch.Tensor) -> torch.Tensor:
    """Raw CAM ``sum_c fc_weight[k_b, c] * features[b, c]``: features (B, C, h, w), fc_weight (K, C),
    class_index (B,) long -> (B, h, w)."""
    return torch.einsum("bc,bchw->bhw", fc_weight[class_index], features)


def normalise_maps(maps: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-map min-max normalisation of (B, h, w) to [0, 1]; a constant map becomes all zeros."""
    flat = maps.flatten(1)
    lo, hi = flat.min(1).values[:, None, None], flat.max(1).values[:, None, None]
    return torch.where(hi - lo > eps, (maps - lo) / (hi - lo + eps), torch.zeros_like(maps))


class ClassActivationMapper(nn.Module):
    """Wraps a classifier; ``forward(images (B, 3, H, W)) -> (cams (B, H, W) in [0, 1], top class (B,))``.

    ``feature_layer`` names the submodule whose output is the final conv feature map (``"layer4"`` for a
    ResNet) and ``fc_layer`` the linear classifier after global average pooling (``"fc"``).
    """

    def __init__(self, classifier: nn.Module, feature_layer: str = "layer4", fc_layer: str = "fc") -> None:
        super().__init__()
        self.classifier = classifier
        self.feature_layer, self.fc_layer = feature_layer, fc_layer
        fc = classifier.get_submodule(fc_layer)
        if not isinstance(fc, nn.Linear):
            raise TypeError(f"{fc_layer!r} must be an nn.Linear, got {type(fc).__name__}")
        self.fc = fc
        self.features_module = classifier.get_submodule(feature_layer)

    def forward(self, images: torch.Tensor, class_index: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        captured = {}
        handle = self.features_module.register_forward_hook(lambda _m, _i, out: captured.__setitem__("f", out))
        try:
            logits = self.classifier(images)
        finally:
            handle.remove()
        top = logits.argmax(1) if class_index is None else class_index
        cams = normalise_maps(class_activation_map(captured["f"], self.fc.weight, top))
        cams = F.interpolate(cams[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        return cams.clamp(0.0, 1.0), top


def load_classifier_weights(model: nn.Module, path: Union[str, Path]) -> nn.Module:
    """Load a local safetensors state dict into ``model`` (strict); bad files raise ``SelfvosInputError``."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: classifier checkpoint not found")
    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise SelfvosInputError(path, f"not a readable safetensors file ({err})") from None
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise SelfvosInputError(path, f"weights do not fit the classifier: missing {result.missing_keys[:5]}, "
                                      f"unexpected {result.unexpected_keys[:5]}")
    return model


class CamPseudoLabeler(PseudoLabeler):
    """Pseudo-masks from the CAM of the top class of each frame (ImageNet-normalised RGB input)."""

    name = "cam"

    def __init__(self, classifier: nn.Module, *, checkpoint: Optional[str] = None, feature_layer: str = "layer4",
                 fc_layer: str = "fc", max_side: int = 0, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        if checkpoint:
            load_classifier_weights(classifier, checkpoint)
        self.mapper = ClassActivationMapper(classifier.eval(), feature_layer, fc_layer)
        self.checkpoint, self.max_side = checkpoint, int(max_side)
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self, video: LazyVideo, index: int) -> np.ndarray:
        full = video.frame(index)
        frame = downscale(full, self.max_side)
        x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float() / 255.0
        cams, _ = self.mapper((x - self.mean) / self.std)
        return upsample_map(cams[0].numpy(), full.shape[:2])

    def config(self) -> Dict[str, object]:
        return {"type": self.name, "checkpoint": self.checkpoint, "feature_layer": self.mapper.feature_layer,
                "fc_layer": self.mapper.fc_layer, "max_side": self.max_side,
                "classifier": type(self.mapper.classifier).__name__}
