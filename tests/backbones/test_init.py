"""Backbone initialisation from any selfvos checkpoint by prefix: MuG export, training checkpoint, bare file."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import selfvos
from selfvos.backbones.init import init_backbones
from selfvos.errors import SelfvosInputError
from selfvos.pretrain import MuGModel


@pytest.fixture(scope="module")
def mug(tmp_path_factory):
    torch.manual_seed(3)
    model = MuGModel()
    folder = model.save_pretrained(tmp_path_factory.mktemp("mug") / "model")
    return model, folder


def test_stm_backbones_start_from_a_mug_export(mug):
    model, folder = mug
    stm = selfvos.create_model("stm")
    report = init_backbones(stm, folder)
    assert report.source_prefix == "backbone." and set(report.loaded) == {"backbone", "memory_encoder.backbone"}
    for name, trunk in stm.backbones().items():
        assert not report.mismatched[name] and not report.absent[name]
        for key, value in trunk.state_dict().items():
            torch.testing.assert_close(value, model.backbone.state_dict()[key], msg=f"{name}.{key}")
    assert "memory_encoder.backbone: 122 tensors loaded" in report.summary()
    assert torch.count_nonzero(stm.memory_encoder.mask_conv.weight) == 0  # mask input starts switched off


def test_training_checkpoint_and_bare_file_prefixes(mug, tmp_path):
    model, _ = mug
    ckpt = tmp_path / "step_0000010"
    ckpt.mkdir()
    save_file({f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}, str(ckpt / "model.safetensors"))
    assert init_backbones(selfvos.create_model("stm"), ckpt).source_prefix == "model.backbone."
    bare = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in model.backbone.state_dict().items()}, str(bare))
    assert init_backbones(selfvos.create_model("stm"), bare).num_loaded == 2 * 122


def test_a_checkpoint_without_a_fitting_trunk_is_an_error(tmp_path):
    r50 = selfvos.create_model("resnet", name="resnet50")
    folder = r50.save_pretrained(tmp_path / "r50")
    with pytest.raises(SelfvosInputError, match="does not fit"):
        init_backbones(selfvos.create_model("stm"), folder)
    with pytest.raises(SelfvosInputError, match="no such checkpoint"):
        init_backbones(selfvos.create_model("stm"), tmp_path / "missing")


def test_a_model_without_a_backbone_is_an_error(mug):
    _, folder = mug
    flow_only = selfvos.create_model("mpnet")  # MP-Net on optical flow alone has no backbone to fill
    assert flow_only.backbones() == {}
    with pytest.raises(SelfvosInputError, match="has no backbone"):
        init_backbones(flow_only, folder)
    assert init_backbones(flow_only, folder, strict=False).num_loaded == 0
