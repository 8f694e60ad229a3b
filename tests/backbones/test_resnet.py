"""Dilated ResNets: shapes and strides, torchvision parameter names, exact a-trous equivalence."""
from __future__ import annotations

from typing import Dict, Tuple

import pytest
import torch

from selfvos.backbones import BackboneConfig, backbone_from_config, create_backbone
from selfvos.registry import BACKBONES

torch.set_num_threads(2)

SPEC = {"resnet18": ("basic", [2, 2, 2, 2]), "resnet34": ("basic", [3, 4, 6, 3]), "resnet50": ("bottleneck", [3, 4, 6, 3]),
        "resnet101": ("bottleneck", [3, 4, 23, 3])}


def torchvision_resnet_shapes(name: str) -> Dict[str, Tuple[int, ...]]:
    """State-dict keys and shapes of ``torchvision.models.<name>()``, written from its architecture."""
    kind, counts = SPEC[name]
    expansion = 1 if kind == "basic" else 4
    shapes: Dict[str, Tuple[int, ...]] = {}

    def bn(prefix: str, c: int) -> None:
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{suffix}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    shapes["conv1.weight"] = (64, 3, 7, 7)
    bn("bn1", 64)
    inplanes = 64
    for li, (planes, n) in enumerate(zip((64, 128, 256, 512), counts), start=1):
        for bi in range(n):
            p = f"layer{li}.{bi}"
            cin = inplanes if bi == 0 else planes * expansion
            if kind == "basic":
                shapes[f"{p}.conv1.weight"] = (planes, cin, 3, 3)
                bn(f"{p}.bn1", planes)
                shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                bn(f"{p}.bn2", planes)
            else:
                shapes[f"{p}.conv1.weight"] = (planes, cin, 1, 1)
                bn(f"{p}.bn1", planes)
                shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                bn(f"{p}.bn2", planes)
                shapes[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
                bn(f"{p}.bn3", planes * 4)
            if bi == 0 and (li > 1 or inplanes != planes * expansion):
                shapes[f"{p}.downsample.0.weight"] = (planes * expansion, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes * expansion)
        inplanes = planes * expansion
    shapes["fc.weight"] = (1000, 512 * expansion)
    shapes["fc.bias"] = (1000,)
    return shapes


def random_state(shapes: Dict[str, Tuple[int, ...]], seed: int = 0) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith(".weight") and len(shape) == 1:  # BN gamma
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * (0.1 if len(shape) == 1 else (2.0 / max(1, torch.Size(shape)[1:].numel())) ** 0.5)
    return state


def test_registered_by_name():
    assert {"resnet18", "resnet34", "resnet50", "resnet101"} <= set(BACKBONES.names())


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_feature_shapes_and_strides(name, output_stride):
    net = create_backbone(name, output_stride=output_stride)
    out = net(torch.rand(1, 3, 64, 96))
    assert list(out) == ["layer1", "layer2", "layer3", "layer4"]
    expected_strides = {"layer1": 4, "layer2": 8, "layer3": 8 if output_stride == 8 else 16, "layer4": output_stride}
    assert net.strides == expected_strides
    expansion = 4 if name == "resnet50" else 1
    for layer, feats in out.items():
        stride = expected_strides[layer]
        assert feats.shape == (1, net.out_channels[layer], 64 // stride, 96 // stride)
        assert net.out_channels[layer] == {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}[layer] * expansion


def test_return_layers_stops_early():
    net = create_backbone("resnet18", output_stride=8, return_layers=("layer2", "layer3"))
    out = net(torch.rand(2, 3, 32, 32))
    assert list(out) == ["layer2", "layer3"] and out["layer3"].shape == (2, 256, 4, 4)
    assert net.feature_channels == 256
    with pytest.raises(ValueError, match="return_layers"):
        create_backbone("resnet18", return_layers=("layer5",))
    with pytest.raises(ValueError, match="output_stride"):
        create_backbone("resnet18", output_stride=4)


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet101"])
def test_state_dict_matches_torchvision_names_and_loads_strictly(name):
    expected = torchvision_resnet_shapes(name)
    net = create_backbone(name, output_stride=8)
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert ours == expected
    state = random_state(expected)
    net.load_state_dict(state, strict=True)
    assert torch.equal(net.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_dilation_is_exact_a_trous_of_the_plain_network(name):
    """Same weights: OS16/OS8 features subsampled on the coarse grid equal the stride-32 network's."""
    state = random_state(torchvision_resnet_shapes(name), seed=1)
    nets = {os_: create_backbone(name, output_stride=os_).eval() for os_ in (32, 16, 8)}
    for net in nets.values():
        net.load_state_dict(state)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        out = {os_: net(x) for os_, net in nets.items()}
    ref3, ref4 = out[32]["layer3"], out[32]["layer4"]

    def assert_same(a: torch.Tensor, b: torch.Tensor) -> None:  # float32 conv algorithms differ slightly
        assert a.shape == b.shape
        assert (a - b).abs().max() <= 1e-4 * b.abs().max()

    assert_same(out[16]["layer3"], ref3)
    assert_same(out[16]["layer4"][..., ::2, ::2], ref4)
    assert_same(out[8]["layer3"][..., ::2, ::2], ref3)
    assert_same(out[8]["layer4"][..., ::4, ::4], ref4)
    assert (out[8]["layer4"][..., 1::4, 1::4] - ref4).abs().max() > 1e-2 * ref4.abs().max()  # the test can fail


def test_grey_input_and_config_builder():
    net = backbone_from_config(BackboneConfig(name="resnet34", output_stride=16, in_chans=1, return_layers=("layer4",)))
    assert net.conv1.weight.shape == (64, 1, 7, 7)
    assert net(torch.rand(2, 1, 32, 32))["layer4"].shape == (2, 512, 2, 2)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        net(torch.rand(2, 3, 32, 32))


def test_gradients_reach_conv1():
    net = create_backbone("resnet18", output_stride=8, return_layers=("layer3",))
    net(torch.rand(2, 3, 32, 32))["layer3"].square().mean().backward()
    assert net.conv1.weight.grad is not None and torch.isfinite(net.conv1.weight.grad).all()
    assert net.conv1.weight.grad.abs().sum() > 0
    assert net.layer4[0].conv1.weight.grad is None  # layer4 not run when not requested
    trainable = {name.split(".")[0] for name, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"conv1", "bn1", "layer1", "layer2", "layer3"}  # layer4 and fc frozen
