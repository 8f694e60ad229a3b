"""Save/load round trips, typed configs, tied weights and the strict-load errors of SelfvosModelMixin."""
from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open

import selfvos
from selfvos.errors import SelfvosInputError
from selfvos.hub import SelfvosModelMixin, architectures, register_architecture


def test_round_trip_gives_identical_outputs_and_equal_typed_config(checkpoint, segmenter, hub_classes):
    loaded = hub_classes["segmenter"].from_pretrained(checkpoint)
    x = torch.rand(2, 3, 12, 20)
    assert torch.equal(loaded(x), segmenter(x))
    assert not loaded.training
    assert loaded.config == segmenter.config
    assert type(loaded.config) is hub_classes["config"]
    assert type(loaded.config.encoder) is hub_classes["encoder"]
    assert loaded.config.encoder.channels == (4, 6, 8)  # a tuple again, not a JSON list
    for name, tensor in segmenter.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_config_json_layout(checkpoint, segmenter):
    document = json.loads((checkpoint / "config.json").read_text())
    assert document["architecture"] == "test-tiny-segmenter"
    assert document["selfvos_version"] == selfvos.__version__
    assert document["config"] == {"encoder": {"channels": [4, 6, 8], "kernel_size": 3}, "num_classes": 2,
                                  "temperature": 0.5, "note": "unit test", "tie_heads": True}
    assert sorted(p.name for p in checkpoint.iterdir()) == ["config.json", "model.safetensors"]
    assert not list(checkpoint.parent.glob(".*tmp-*")), "the staging directory must be cleaned up"
    umask = os.umask(0)
    os.umask(umask)
    assert checkpoint.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's private 0700


def test_tied_weights_are_stored_once_and_stay_tied(checkpoint, hub_classes):
    with safe_open(str(checkpoint / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        assert json.loads(f.metadata()["selfvos.tied"]) == {"aux_head.weight": "head.weight"}
    assert "head.weight" in keys and "aux_head.weight" not in keys
    loaded = hub_classes["segmenter"].from_pretrained(checkpoint)
    assert loaded.aux_head.weight is loaded.head.weight


def test_generic_from_pretrained_dispatches_on_architecture(checkpoint, hub_classes, tmp_path):
    assert type(selfvos.from_pretrained(checkpoint)) is hub_classes["segmenter"]
    tagger = hub_classes["tagger"](hub_classes["tagger_config"](num_tags=4))
    loaded = SelfvosModelMixin.from_pretrained(tagger.save_pretrained(tmp_path / "tagger"))
    assert type(loaded) is hub_classes["tagger"] and loaded.config.num_tags == 4
    assert {"test-tiny-segmenter", "test-tiny-tagger"} <= set(architectures())


def test_save_over_existing_directory_replaces_files_and_keeps_others(checkpoint, hub_classes):
    (checkpoint / "training.json").write_text("{}")
    other = hub_classes["trained_segmenter"](seed=1)
    other.save_pretrained(checkpoint)
    loaded = hub_classes["segmenter"].from_pretrained(checkpoint)
    assert torch.equal(loaded.head.bias, other.head.bias)
    assert (checkpoint / "training.json").exists()


def test_wrong_architecture_names_the_config_file(checkpoint, hub_classes):
    with pytest.raises(SelfvosInputError, match=r"config\.json: config is for architecture 'test-tiny-segmenter'"):
        hub_classes["tagger"].from_pretrained(checkpoint)


def test_unknown_architecture_and_bad_config_are_clear(checkpoint):
    path = checkpoint / "config.json"
    document = json.loads(path.read_text())
    path.write_text(json.dumps({**document, "architecture": "no-such-net"}))
    with pytest.raises(SelfvosInputError, match=r"config\.json: unknown architecture 'no-such-net'.*test-tiny-segmenter"):
        selfvos.from_pretrained(checkpoint)
    document["config"]["encoder"]["depth"] = 3
    path.write_text(json.dumps(document))
    with pytest.raises(SelfvosInputError, match=r"config\.json: config does not fit TinySegmenter.*'depth'"):
        selfvos.from_pretrained(checkpoint)
    path.write_text("{not json")
    with pytest.raises(SelfvosInputError, match=r"config\.json: not a readable JSON config"):
        selfvos.from_pretrained(checkpoint)


@pytest.mark.parametrize("content", [b"", b"\x00" * 64, b"garbage that is not safetensors"])
def test_corrupted_weights_name_the_file(checkpoint, content):
    (checkpoint / "model.safetensors").write_bytes(content)
    with pytest.raises(SelfvosInputError, match=r"model\.safetensors: not a readable safetensors file"):
        selfvos.from_pretrained(checkpoint)


def test_truncated_weights_name_the_file(checkpoint):
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-40])
    with pytest.raises(SelfvosInputError, match=r"model\.safetensors: not a readable safetensors file"):
        selfvos.from_pretrained(checkpoint)


def test_strict_load_lists_missing_unexpected_and_mismatched_keys(tmp_path, hub_classes):
    config_cls, encoder_cls = hub_classes["config"], hub_classes["encoder"]
    small = hub_classes["segmenter"](config_cls(encoder=encoder_cls(channels=(4, 8))))
    ckpt = small.save_pretrained(tmp_path / "small")
    document = json.loads((ckpt / "config.json").read_text())
    document["config"]["encoder"]["channels"] = [4, 6, 8]  # one more conv block + different widths
    (ckpt / "config.json").write_text(json.dumps(document))
    with pytest.raises(SelfvosInputError) as info:
        selfvos.from_pretrained(ckpt)
    message = str(info.value)
    assert message.startswith(str(ckpt / "model.safetensors"))
    assert "shape mismatch(es): encoder.3.weight: file (8, 4, 3, 3) vs model (6, 4, 3, 3)" in message
    assert "missing key(s): encoder.6.weight, encoder.6.bias, encoder.7.weight" in message
    assert "unexpected key(s)" not in message
    document["config"]["encoder"]["channels"] = [4]
    (ckpt / "config.json").write_text(json.dumps(document))
    with pytest.raises(SelfvosInputError, match=r"unexpected key\(s\): encoder\.3\.bias, encoder\.3\.weight, encoder\.4"):
        selfvos.from_pretrained(ckpt)


def test_tie_mismatch_between_file_and_model(tmp_path, hub_classes):
    segmenter_cls, config_cls = hub_classes["segmenter"], hub_classes["config"]
    untied = hub_classes["trained_segmenter"](config_cls(tie_heads=False))
    ckpt = untied.save_pretrained(tmp_path / "untied")
    assert not torch.equal(untied.head.weight, untied.aux_head.weight)
    document = json.loads((ckpt / "config.json").read_text())
    document["config"]["tie_heads"] = True
    (ckpt / "config.json").write_text(json.dumps(document))
    with pytest.raises(SelfvosInputError, match=r"1 key\(s\) tied in the model but different in the file: aux_head\.weight"):
        segmenter_cls.from_pretrained(ckpt)
    loaded = segmenter_cls.from_pretrained(ckpt, strict=False)
    assert torch.equal(loaded.head.weight, untied.head.weight) and loaded.aux_head.weight is loaded.head.weight


def test_non_strict_load_skips_missing_keys_but_never_shapes(checkpoint, segmenter, hub_classes):
    document = json.loads((checkpoint / "config.json").read_text())
    document["config"]["tie_heads"] = False  # the file stores the tied weight once: aux_head.weight is missing
    (checkpoint / "config.json").write_text(json.dumps(document))
    with pytest.raises(SelfvosInputError, match=r"1 missing key\(s\): aux_head\.weight$"):
        selfvos.from_pretrained(checkpoint)
    loaded = selfvos.from_pretrained(checkpoint, strict=False)
    assert torch.equal(loaded.head.weight, segmenter.head.weight)
    assert torch.equal(loaded.encoder[0].weight, segmenter.encoder[0].weight)
    document["config"]["num_classes"] = 3
    (checkpoint / "config.json").write_text(json.dumps(document))
    with pytest.raises(SelfvosInputError, match=r"shape mismatch\(es\): head\.weight: file \(2, 8, 1, 1\) vs model \(3, 8, 1, 1\)"):
        selfvos.from_pretrained(checkpoint, strict=False)


def test_pickle_checkpoints_are_refused(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "test-tiny-tagger", "config": {}}))
    with pytest.raises(SelfvosInputError, match=r"no model\.safetensors \(found pytorch_model\.bin"):
        selfvos.from_pretrained(tmp_path)


def test_missing_path_is_not_mistaken_for_a_repo_id(tmp_path):
    with pytest.raises(SelfvosInputError, match=r"no such checkpoint directory"):
        selfvos.from_pretrained(str(tmp_path / "nothing" / "here"))


def test_registration_rules(hub_classes):
    class Nameless(SelfvosModelMixin, torch.nn.Module):
        config_class = hub_classes["tagger_config"]

    with pytest.raises(TypeError, match="architecture"):
        register_architecture(Nameless)

    class Clash(SelfvosModelMixin, torch.nn.Module):
        architecture = "test-tiny-tagger"
        config_class = hub_classes["tagger_config"]

    with pytest.raises(KeyError, match="already registered"):
        register_architecture(Clash)

    class NoConfig(SelfvosModelMixin, torch.nn.Module):
        architecture = "test-no-config"

    with pytest.raises(TypeError, match="dataclass config"):
        register_architecture(NoConfig)


def test_config_that_cannot_round_trip_is_refused_at_save(tmp_path, hub_classes):
    model = hub_classes["tagger"](hub_classes["tagger_config"](num_tags=2))
    model.config = {"num_tags": 2}
    with pytest.raises(TypeError, match="config is dict, not TaggerConfig"):
        model.save_pretrained(tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_import_selfvos_stays_light_until_from_pretrained_is_used():
    import subprocess
    import sys

    code = ("import sys, selfvos; assert 'torch' not in sys.modules, 'torch imported by import selfvos'; "
            "f = selfvos.from_pretrained; assert 'torch' in sys.modules; print(f.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "selfvos.hub.mixin"
