"""Backbone initialisation from safetensors: local files, grey conversion, clear errors, offline hub ids."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from selfvos.backbones import create_backbone, load_backbone_weights
from selfvos.backbones.weights import adapt_state_dict
from selfvos.errors import SelfvosInputError

from .test_resnet import random_state, torchvision_resnet_shapes

torch.set_num_threads(2)


@pytest.fixture()
def resnet18_file(tmp_path):
    state = random_state(torchvision_resnet_shapes("resnet18"), seed=3)
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path, state


def test_load_local_safetensors_drops_fc_only(resnet18_file):
    path, state = resnet18_file
    net = create_backbone("resnet18", output_stride=8, pretrained=str(path))
    loaded = net.state_dict()
    for key, value in state.items():
        if key.startswith("fc."):
            continue
        assert torch.equal(loaded[key], value), key
    assert not torch.equal(loaded["fc.weight"], state["fc.weight"])  # classifier left alone


def test_grey_backbone_sums_rgb_weights_and_matches_rgb_on_grey_images(resnet18_file):
    path, state = resnet18_file
    rgb = create_backbone("resnet18", output_stride=16, pretrained=str(path)).eval()
    grey = create_backbone("resnet18", output_stride=16, in_chans=1, pretrained=str(path)).eval()
    torch.testing.assert_close(grey.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    image = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(grey(image)["layer4"], rgb(image.expand(-1, 3, -1, -1))["layer4"], rtol=1e-4, atol=1e-4)


def test_prefixes_are_stripped():
    state = {"module.conv1.weight": torch.zeros(64, 3, 7, 7), "backbone.bn1.bias": torch.zeros(64), "fc.bias": torch.zeros(3)}
    assert set(adapt_state_dict(state, in_chans=3)) == {"conv1.weight", "bn1.bias"}


def test_mismatched_weights_name_the_file(tmp_path, resnet18_file):
    path, state = resnet18_file
    with pytest.raises(SelfvosInputError, match="missing") as err:
        create_backbone("resnet34", pretrained=str(path))
    assert str(path) in str(err.value)
    del state["layer1.0.conv1.weight"]
    broken = tmp_path / "broken.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(broken))
    with pytest.raises(SelfvosInputError, match=r"layer1\.0\.conv1\.weight"):
        load_backbone_weights(create_backbone("resnet18"), broken)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(SelfvosInputError, match="weights file not found"):
        create_backbone("resnet18", pretrained=str(tmp_path / "nope.safetensors"))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(SelfvosInputError, match="not a readable safetensors file") as err:
        create_backbone("resnet18", pretrained=str(junk))
    assert str(err.value).startswith(str(junk))


def test_uncached_hub_id_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SelfvosInputError, match="not in the local Hugging Face cache") as err:
        create_backbone("resnet18", pretrained="selfvos-test-owner/no-such-model-anywhere")
    assert str(err.value).startswith("selfvos-test-owner/no-such-model-anywhere: ")
