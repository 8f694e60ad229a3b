"""Dilated ResNet-18/34/50/101 with torchvision / timm parameter names.

The module tree mirrors ``torchvision.models.ResNet`` exactly (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer2.0.downsample.0``, ..., ``fc``), so a torchvision or timm ResNet state dict loads strictly apart
from ``fc.*``. Output stride 8 or 16 is reached like torchvision's ``replace_stride_with_dilation``:
the stride of layer4 (and layer3 for stride 8) becomes 1 and the following 3x3 convolutions dilate.

Strides of the returned feature maps (input ``(B, C_in, H, W)``):

====== ===== ===== ===== =====
OS     layer1 layer2 layer3 layer4
====== ===== ===== ===== =====
32     4     8     16    32
16     4     8     16    16
8      4     8     8     8
====== ===== ===== ===== =====
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple, Type, Union

import torch
from torch import nn

LAYER_NAMES: Tuple[str, ...] = ("layer1", "layer2", "layer3", "layer4")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual; ``dilation`` applies to both (unlike torchvision, allowed > 1)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1, first_dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride, first_dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride, dilation) -> 1x1 with expansion 4 (ResNet v1.5, stride on the 3x3)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1, first_dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride, first_dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


Block = Union[Type[BasicBlock], Type[Bottleneck]]

ARCHITECTURES: Dict[str, Tuple[Block, List[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
    "resnet101": (Bottleneck, [3, 4, 23, 3]),
}


class ResNet(nn.Module):
    """ResNet trunk returning ``{layer: (B, C_layer, H / stride_layer, W / stride_layer)}``.

    Args:
        depth_name: ``"resnet18" | "resnet34" | "resnet50" | "resnet101"``.
        output_stride: 8, 16 or 32 (stride of layer4).
        in_chans: 3 (RGB) or 1 (grey).
        return_layers: which of ``layer1..layer4`` ``forward`` returns; layers after the deepest one
            requested are built (so state dicts stay compatible) but never run, and are frozen
            (``requires_grad=False``) like ``fc``.
    """

    def __init__(self, depth_name: str = "resnet18", output_stride: int = 8, in_chans: int = 3,
                 return_layers: Sequence[str] = LAYER_NAMES, num_classes: int = 1000) -> None:
        super().__init__()
        if depth_name not in ARCHITECTURES:
            raise ValueError(f"unknown ResNet {depth_name!r}; choose from {sorted(ARCHITECTURES)}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        unknown = [name for name in return_layers if name not in LAYER_NAMES]
        if unknown or not return_layers:
            raise ValueError(f"return_layers must be a non-empty subset of {LAYER_NAMES}, got {list(return_layers)}")
        block, counts = ARCHITECTURES[depth_name]
        dilate = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}[output_stride]
        self.depth_name = depth_name
        self.output_stride = output_stride
        self.in_chans = in_chans
        self.return_layers = tuple(name for name in LAYER_NAMES if name in return_layers)
        self.inplanes, self.dilation = 64, 1

        self.conv1 = nn.Conv2d(in_chans, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, counts[0])
        self.layer2 = self._make_layer(block, 128, counts[1], stride=2, dilate=dilate[0])
        self.layer3 = self._make_layer(block, 256, counts[2], stride=2, dilate=dilate[1])
        self.layer4 = self._make_layer(block, 512, counts[3], stride=2, dilate=dilate[2])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)  # kept only for state-dict compatibility

        self.out_channels: Dict[str, int] = {f"layer{i + 1}": c * block.expansion
                                             for i, c in enumerate((64, 128, 256, 512))}
        out_strides = [4, 8, 16, 32]
        for i, flag in enumerate(dilate):
            if flag:
                out_strides[i + 1] = out_strides[i]
        self.strides: Dict[str, int] = dict(zip(LAYER_NAMES, out_strides))
        self._init_weights()
        # fc and the layers after the deepest returned one never run: freeze them so optimisers and
        # DistributedDataParallel see only parameters that receive gradients.
        unused = [self.fc] + [getattr(self, n) for n in LAYER_NAMES[LAYER_NAMES.index(self.return_layers[-1]) + 1:]]
        for module in unused:
            module.requires_grad_(False)

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int = 1, dilate: bool = False) -> nn.Sequential:
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, dilation=self.dilation,
                        first_dilation=previous_dilation)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, dilation=self.dilation, first_dilation=self.dilation)
                   for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():  # zero-init the last BN of each residual branch (Goyal et al.)
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    @property
    def feature_channels(self) -> int:
        """Channels of the deepest returned layer."""
        return self.out_channels[self.return_layers[-1]]

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``x``: (B, in_chans, H, W) -> ``{name: (B, out_channels[name], ceil(H/stride), ceil(W/stride))}``."""
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected input (B, {self.in_chans}, H, W), got {tuple(x.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out: Dict[str, torch.Tensor] = {}
        for name in LAYER_NAMES:
            x = getattr(self, name)(x)
            if name in self.return_layers:
                out[name] = x
            if name == self.return_layers[-1]:
                break
        return out
