"""Two-stream (appearance + motion) blocks shared by the zero-shot heads that read optical flow (LVO, FusionSeg).

Flows are (N, 2, H, W) float ``(dx, dy)`` in pixels of the (H, W) image (x to the right, y down). A motion stream
must not depend on the input resolution, so flow enters it in one of two resolution-invariant forms:

- :func:`normalize_flow`: ``f / sqrt(H^2 + W^2)``, the displacement as a fraction of the image diagonal
  (resizing image and flow together by s leaves it unchanged);
- :func:`flow_to_image`: the flow rendered as an RGB image in [0, 1] (FusionSeg's motion-stream input), HSV with
  ``hue = atan2(dy, dx) / 2 pi`` (mod 1: right = red, down = chartreuse, left = cyan, up = violet),
  ``saturation = |f| / max(max_frame |f|, min_motion * sqrt(H^2 + W^2))`` (magnitude normalised per frame) and
  ``value = 1``: zero flow is white, the frame's fastest pixel fully saturated. This is the hue-circle form of the
  Middlebury colour coding (``flowToColor``) that FusionSeg's released code renders its flow with (also white at
  rest, saturation = magnitude / the frame's largest magnitude); its 55-colour wheel is replaced by the uniform
  HSV hue circle, which keeps the wheel's colours for right (red), left (cyan) and up (blue-violet) and moves
  down from yellow to chartreuse.

Streams:

- :class:`ResNetStream`: a ResNet trunk named ``backbone`` (so ``VOSHead.backbones()`` lists it and ``--init``
  fills it from a pretrained checkpoint) + a head module on its deepest returned layer;
- :class:`DilatedClassifier`: DeepLab-v2's classifier, parallel 3x3 convolutions with dilations ``rates`` each
  giving class scores, summed (FusionSeg's per-stream prediction layer);
- :class:`FlowEncoder`: a small fully convolutional net on the normalised flow down to 1/8 (LVO's motion stream
  stand-in for MP-Net).

Fusion (:class:`PredictionFusion`, FusionSeg's fusion model): with A, M the (N, C, h, w) class scores of the appearance
and motion streams and ``c_x`` independent 1x1 convolutions (C -> C),

    a = relu(c_a(A)),  m = relu(c_m(M)),  j = relu(c_a'(A)) * relu(c_m'(M))   (three parallel branches)
    out = max(a, m, j)   element-wise (``mode="max"``, the paper)   or   a + m + j   (``mode="sum"``)

The paper's reading: a pixel is confidently object when either stream alone is confident (a or m), or when both
are moderately confident together (the product branch j, large only where both are). The 1x1 convolutions start
as the identity with bias 1, so every branch is active (ReLU input > 0) while the stream scores are near 0.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from selfvos.backbones import BackboneConfig, backbone_from_config

FUSION_MODES = ("max", "sum")


# --- flow inputs ----------------------------------------------------------------------------------------
def batch_flows(batch: Mapping[str, torch.Tensor], frames: torch.Tensor, head: str) -> torch.Tensor:
    """``batch["flows"]`` (B, T, 2, H, W), checked against ``frames`` (B, T, 3, H, W); a clear error when absent."""
    if "flows" not in batch:
        raise ValueError(f"{head} reads optical flow: batch['flows'] (B, T, 2, H, W), the flow of frame t -> t+1, "
                         "is missing (the data option `flow` / the inference core provide it)")
    flows = batch["flows"]
    if flows.dim() != 5 or flows.shape[2] != 2 or flows.shape[:2] != frames.shape[:2] \
            or flows.shape[-2:] != frames.shape[-2:]:
        raise ValueError(f"{head}: flows must be (B, T, 2, H, W) matching frames {tuple(frames.shape)}, "
                         f"got {tuple(flows.shape)}")
    return flows


def normalize_flow(flows: torch.Tensor) -> torch.Tensor:
    """(N, 2, H, W) flow in pixels -> the same divided by the image diagonal ``sqrt(H^2 + W^2)`` (float32)."""
    h, w = flows.shape[-2:]
    return flows.float() / math.hypot(h, w)


def hsv_to_rgb(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Per-pixel HSV (each (N, 1, H, W), hue in [0, 1), s and v in [0, 1]) -> (N, 3, H, W) RGB in [0, 1]:
    ``channel(n) = v - v s max(0, min(k, 4 - k, 1))``, ``k = (n + 6 hue) mod 6``, n = 5, 3, 1 for R, G, B."""
    n = torch.tensor([5.0, 3.0, 1.0], device=hue.device, dtype=hue.dtype).view(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * hue, 6.0)
    ramp = torch.minimum(torch.minimum(k, 4.0 - k), torch.ones_like(k)).clamp(min=0.0)
    return value - value * saturation * ramp


def flow_to_image(flows: torch.Tensor, min_motion: float = 1e-3) -> torch.Tensor:
    """(N, 2, H, W) flow in pixels -> (N, 3, H, W) RGB rendering in [0, 1] (module docstring; not differentiable
    through the per-frame maximum, which is treated as a constant).

    min_motion: floor of the per-frame normalising magnitude, as a fraction of the image diagonal (1e-3: about
        half a pixel at 480p), so a frame of sub-pixel noise is not blown up to full saturation.
    """
    unit = normalize_flow(flows)
    dx, dy = unit[:, :1], unit[:, 1:]
    magnitude = torch.hypot(dx, dy)
    scale = magnitude.detach().amax(dim=(2, 3), keepdim=True).clamp(min=min_motion)
    hue = torch.remainder(torch.atan2(dy, dx) / (2 * math.pi), 1.0)
    return hsv_to_rgb(hue, (magnitude / scale).clamp(max=1.0), torch.ones_like(hue))


# --- streams ----------------------------------------------------------------------------------------------
class ResNetStream(nn.Module):
    """One stream: ``backbone`` (a ResNet trunk on (N, in_chans, H, W), already normalised) -> its deepest returned
    layer (N, C, H/s, W/s) -> ``head`` (built as ``head(C)``) -> (N, D, H/s, W/s)."""

    def __init__(self, backbone: BackboneConfig, head: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.backbone = backbone_from_config(backbone)
        self.head = head(self.backbone.feature_channels)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) -> the trunk's deepest returned layer."""
        return self.backbone(images.contiguous(memory_format=torch.channels_last))[self.backbone.return_layers[-1]]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


class DilatedClassifier(nn.Module):
    """DeepLab-v2 classifier (ASPP-L): ``sum_r conv3x3_dilation_r(x)``, (N, C_in, h, w) -> (N, classes, h, w)."""

    def __init__(self, in_channels: int, classes: int = 2, rates: Sequence[int] = (6, 12, 18, 24)) -> None:
        super().__init__()
        self.branches = nn.ModuleList([nn.Conv2d(in_channels, classes, 3, padding=r, dilation=r) for r in rates])
        for conv in self.branches:  # DeepLab's init of the score layers: small, so the initial scores are near 0
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([conv(x) for conv in self.branches]).sum(dim=0)


class FlowEncoder(nn.Module):
    """A small fully convolutional motion net: (N, 2, H, W) diagonal-normalised flow -> (N, D, ceil(H/8), ceil(W/8)).

    ``gain * f`` (gain 100: a displacement of 1% of the diagonal reads 1) -> three 3x3 stride-2 convolutions
    (widths ``channels``) -> ``len(dilations)`` 3x3 convolutions at 1/8 with those dilations (receptive field
    about 2 * (2 + 4 + 8) = 28 cells = 224 input pixels at the defaults, wide enough to compare an object's motion
    with the camera's), each + ReLU. No normalisation layer: the absolute flow size survives.
    """

    def __init__(self, channels: Sequence[int] = (32, 32, 64), dilations: Sequence[int] = (2, 4, 8),
                 gain: float = 100.0) -> None:
        super().__init__()
        if len(channels) != 3:
            raise ValueError(f"FlowEncoder channels must be 3 widths (1/2, 1/4, 1/8), got {list(channels)}")
        self.gain = float(gain)
        layers, previous = [], 2
        for width in channels:
            layers += [nn.Conv2d(previous, width, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            previous = width
        for rate in dilations:
            layers += [nn.Conv2d(previous, previous, 3, padding=rate, dilation=rate), nn.ReLU(inplace=True)]
        self.layers = nn.Sequential(*layers)
        self.out_channels = previous

    def forward(self, normalized_flow: torch.Tensor) -> torch.Tensor:
        return self.layers(self.gain * normalized_flow)


# --- fusion -----------------------------------------------------------------------------------------------
def fuse_scores(a: torch.Tensor, m: torch.Tensor, joint: torch.Tensor, mode: str = "max") -> torch.Tensor:
    """The fusion reducer over the three branch outputs (same shapes): element-wise max (paper) or sum."""
    if mode == "max":
        return torch.maximum(torch.maximum(a, m), joint)
    if mode == "sum":
        return a + m + joint
    raise ValueError(f"fusion mode must be one of {FUSION_MODES}, got {mode!r}")


def _identity_conv(channels: int, bias: float) -> nn.Conv2d:
    conv = nn.Conv2d(channels, channels, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
        conv.bias.fill_(bias)
    return conv


class PredictionFusion(nn.Module):
    """FusionSeg's fusion block (module docstring): appearance scores A and motion scores M, each (N, C, h, w)
    -> fused scores (N, C, h, w) = ``reduce(relu(c_a A), relu(c_m M), relu(c_a' A) * relu(c_m' M))``."""

    def __init__(self, channels: int = 2, mode: str = "max", init_bias: float = 1.0) -> None:
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"fusion mode must be one of {FUSION_MODES}, got {mode!r}")
        self.mode = mode
        self.appearance = _identity_conv(channels, init_bias)
        self.motion = _identity_conv(channels, init_bias)
        self.joint_appearance = _identity_conv(channels, init_bias)
        self.joint_motion = _identity_conv(channels, init_bias)

    def branches(self, appearance: torch.Tensor, motion: torch.Tensor):
        """The three branch outputs (a, m, j), each (N, C, h, w) >= 0."""
        a = F.relu(self.appearance(appearance))
        m = F.relu(self.motion(motion))
        joint = F.relu(self.joint_appearance(appearance)) * F.relu(self.joint_motion(motion))
        return a, m, joint

    def forward(self, appearance: torch.Tensor, motion: torch.Tensor, mode: Optional[str] = None) -> torch.Tensor:
        return fuse_scores(*self.branches(appearance, motion), mode or self.mode)


__all__ = ["DilatedClassifier", "FUSION_MODES", "FlowEncoder", "PredictionFusion", "ResNetStream", "batch_flows",
           "flow_to_image", "fuse_scores", "hsv_to_rgb", "normalize_flow"]
