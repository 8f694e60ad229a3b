"""The real selfvos models on the hub layer: every registered architecture, ResNetBackbone and MuGModel."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

import selfvos
from selfvos.backbones import BackboneConfig, ResNet, ResNetBackbone, backbone_from_config, create_backbone
from selfvos.errors import SelfvosInputError
from selfvos.hub import SelfvosModelMixin, architectures, config_class_of
from selfvos.pretrain import MuGConfig, MuGModel


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def test_the_real_models_are_registered():
    known = architectures()
    assert known["mug"] is MuGModel and known["resnet"] is ResNetBackbone
    assert config_class_of(MuGModel) is MuGConfig and config_class_of(ResNetBackbone) is BackboneConfig


@pytest.mark.parametrize("name", sorted(architectures()))
def test_every_registered_architecture_round_trips_with_its_default_config(tmp_path, name):
    cls = architectures()[name]
    torch.manual_seed(0)
    model = cls(config_class_of(cls)())
    loaded = SelfvosModelMixin.from_pretrained(model.save_pretrained(tmp_path / name))
    assert type(loaded) is cls and loaded.config == model.config
    assert_same_state(model, loaded)


def test_every_built_backbone_carries_its_config_and_saves(tmp_path):
    net = create_backbone("resnet34", output_stride=16, return_layers=["layer2"])  # a list: kept as a tuple
    assert isinstance(net, ResNet) and type(net) is ResNetBackbone
    assert net.config == BackboneConfig(name="resnet34", output_stride=16, return_layers=("layer2",))
    config = BackboneConfig(name="resnet50", output_stride=32, in_chans=1, return_layers=("layer1",))
    assert backbone_from_config(config).config == config
    assert type(selfvos.from_pretrained(net.save_pretrained(tmp_path / "r34"))) is ResNetBackbone


def test_backbone_round_trip_keeps_typed_config_and_outputs(tmp_path):
    config = BackboneConfig(name="resnet18", output_stride=16, in_chans=1, return_layers=("layer3", "layer4"))
    torch.manual_seed(0)
    model = ResNetBackbone(config).train()
    with torch.no_grad():
        model(torch.rand(2, 1, 64, 64))  # BatchNorm statistics away from their defaults
    model.eval()
    checkpoint = model.save_pretrained(tmp_path / "resnet")
    assert json.loads((checkpoint / "config.json").read_text())["architecture"] == "resnet"
    loaded = selfvos.from_pretrained(checkpoint)
    assert type(loaded) is ResNetBackbone and loaded.config == config
    assert loaded.config.return_layers == ("layer3", "layer4")
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        out, ref = loaded(x), model(x)
    assert set(out) == {"layer3", "layer4"}
    for key in out:
        assert torch.equal(out[key], ref[key]), key


def test_mug_model_round_trip_gives_equal_config_and_identical_outputs(mug_model, mug_checkpoint):
    document = json.loads((mug_checkpoint / "config.json").read_text())
    assert document["architecture"] == "mug"
    assert document["config"]["backbone"] == {"name": "resnet18", "output_stride": 8, "in_chans": 3,
                                              "pretrained": None, "return_layers": ["layer3"]}
    loaded = selfvos.from_pretrained(mug_checkpoint)
    assert type(loaded) is MuGModel and not loaded.training
    assert loaded.config == MuGConfig() == mug_model.config
    assert type(loaded.config.backbone) is BackboneConfig and loaded.config.backbone.return_layers == ("layer3",)
    assert type(loaded.backbone) is ResNetBackbone
    assert_same_state(mug_model, loaded)
    torch.manual_seed(1)
    frames, memory = torch.rand(1, 2, 3, 64, 64), torch.rand(1, 2, 256, 8, 8)
    with torch.no_grad():
        feats = loaded.encode(frames)
        assert torch.equal(feats, mug_model.encode(frames))
        assert torch.equal(loaded.frame_logits(feats), mug_model.frame_logits(feats))
        x_i, x_j = loaded.embed(feats[:, 0]), loaded.embed(feats[:, 1])
        assert torch.equal(loaded.regress_transform(x_i, x_j), mug_model.regress_transform(x_i, x_j))
        assert torch.equal(loaded.read_memory(feats[:, 0], memory), mug_model.read_memory(feats[:, 0], memory))
    assert MuGModel.from_pretrained(mug_checkpoint).config == mug_model.config
    with pytest.raises(SelfvosInputError, match=r"config is for architecture 'mug', not 'resnet'"):
        ResNetBackbone.from_pretrained(mug_checkpoint)


def test_mug_strict_load_lists_the_keys(mug_checkpoint):
    config_path, weights_path = mug_checkpoint / "config.json", mug_checkpoint / "model.safetensors"
    tensors = load_file(str(weights_path))
    dropped = ["memory.key.weight", "memory.key.bias"]  # the memory reader's key projection, in model order
    save_file({k: v for k, v in tensors.items() if k not in dropped}, str(weights_path), metadata={"format": "pt"})
    with pytest.raises(SelfvosInputError) as info:
        selfvos.from_pretrained(mug_checkpoint)
    assert str(info.value).startswith(f"{weights_path}: weights do not fit MuGModel")
    assert str(info.value).endswith("-> 2 missing key(s): memory.key.weight, memory.key.bias")
    loaded = selfvos.from_pretrained(mug_checkpoint, strict=False)
    assert torch.equal(loaded.mask_head.bias, torch.full((1,), 0.25))

    document = json.loads(config_path.read_text())
    document["config"]["embed_dim"] = 64
    config_path.write_text(json.dumps(document))
    with pytest.raises(SelfvosInputError, match=r"shape mismatch\(es\): .*projection\.weight: file \(128, 256, 1, 1\) "
                                                r"vs model \(64, 256, 1, 1\)"):
        selfvos.from_pretrained(mug_checkpoint, strict=False)


def test_initial_backbone_weights_are_not_needed_to_load_a_checkpoint(tmp_path):
    init = tmp_path / "imagenet.safetensors"
    torch.manual_seed(3)
    save_file(ResNet("resnet18").state_dict(), str(init))
    config = MuGConfig(backbone=BackboneConfig(pretrained=str(init), return_layers=("layer2",)), embed_dim=16,
                       key_dim=8, value_dim=16, regressor_grid=4, regressor_channels=8)
    model = MuGModel(config)
    assert torch.equal(model.backbone.conv1.weight, load_file(str(init))["conv1.weight"])
    with torch.no_grad():
        model.backbone.conv1.weight.mul_(2)  # "trained": the checkpoint, not the initial file, must win
    checkpoint = model.save_pretrained(tmp_path / "mug")
    init.unlink()  # the loading machine does not have the initial weights
    loaded = selfvos.from_pretrained(checkpoint)
    assert loaded.config == config  # the provenance stays in the config
    assert_same_state(model, loaded)
    with pytest.raises(SelfvosInputError, match=r"imagenet\.safetensors: weights file not found"):
        selfvos.from_pretrained(checkpoint, strict=False)  # non-strict keeps the initial weights for missing keys


def test_from_pretrained_finds_mug_without_importing_the_model_package(mug_checkpoint):
    code = ("import sys, selfvos; assert 'selfvos.pretrain' not in sys.modules; "
            f"m = selfvos.from_pretrained({str(mug_checkpoint)!r}); "
            "print(type(m).__module__, type(m).__name__, m.config.backbone.return_layers)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["selfvos.pretrain.model", "MuGModel", "('layer3',)"]
