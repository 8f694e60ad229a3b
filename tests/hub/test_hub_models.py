"""Round trips of the real selfvos models: every registered architecture, the backbone and the MuG model."""
from __future__ import annotations

import pytest
import torch

from selfvos.hub import SelfvosModelMixin, architectures, config_class_of


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


@pytest.mark.parametrize("name", sorted(architectures()))
def test_every_registered_architecture_round_trips_with_its_default_config(tmp_path, name):
    cls = architectures()[name]
    torch.manual_seed(0)
    model = cls(config_class_of(cls)())
    loaded = SelfvosModelMixin.from_pretrained(model.save_pretrained(tmp_path / name))
    assert type(loaded) is cls and loaded.config == model.config
    assert_same_state(model, loaded)


def _with_mixin(cls: type, name: str, config_class: type) -> type:
    """``cls`` itself when it already inherits the mixin, else a test subclass that adds it."""
    if issubclass(cls, SelfvosModelMixin):
        return cls
    return type(f"Hub{cls.__name__}", (SelfvosModelMixin, cls), {"architecture": name, "config_class": config_class})


def test_backbone_round_trip(tmp_path):
    backbones = pytest.importorskip("selfvos.backbones")
    from selfvos.backbones.resnet import ResNet

    class HubResNet(SelfvosModelMixin, ResNet):
        architecture = "test-resnet"
        config_class = backbones.BackboneConfig

        def __init__(self, config) -> None:
            super().__init__(config.name, output_stride=config.output_stride, in_chans=config.in_chans,
                             return_layers=config.return_layers)
            self.config = config

    config = backbones.BackboneConfig(name="resnet18", output_stride=16, in_chans=1, return_layers=("layer3", "layer4"))
    torch.manual_seed(0)
    model = HubResNet(config).eval()
    loaded = HubResNet.from_pretrained(model.save_pretrained(tmp_path / "resnet"))
    assert loaded.config == config and loaded.config.return_layers == ("layer3", "layer4")
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        out, ref = loaded(x), model(x)
    assert set(out) == {"layer3", "layer4"}
    for key in out:
        assert torch.equal(out[key], ref[key]), key


def test_mug_model_round_trip(tmp_path):
    model_module = pytest.importorskip("selfvos.pretrain.model")
    backbones = pytest.importorskip("selfvos.backbones")
    cls = _with_mixin(model_module.MuGModel, "test-mug", model_module.MuGConfig)
    config = model_module.MuGConfig(
        backbone=backbones.BackboneConfig(name="resnet18", output_stride=8, return_layers=("layer3",)),
        embed_dim=32, key_dim=16, value_dim=32, regressor_grid=4, regressor_channels=16,
    )
    torch.manual_seed(0)
    model = cls(config).eval()
    with torch.no_grad():
        model.coattention_weight.add_(torch.randn_like(model.coattention_weight))
    loaded = cls.from_pretrained(model.save_pretrained(tmp_path / "mug"))
    assert loaded.config == config and type(loaded.config.backbone) is backbones.BackboneConfig
    assert_same_state(model, loaded)
    frames = torch.rand(1, 2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.encode(frames), model.encode(frames))
        x_i, x_j = loaded.embed(loaded.encode(frames[:, 0])), loaded.embed(loaded.encode(frames[:, 1]))
        assert torch.equal(loaded.regress_transform(x_i, x_j), model.regress_transform(x_i, x_j))
