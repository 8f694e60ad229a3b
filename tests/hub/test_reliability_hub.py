"""Issue 19, exported checkpoints: a killed save leaves no staging folder behind for long, weights get the
same permissions as config.json, and a damaged or wrongly typed config.json / model.safetensors is one
``SelfvosInputError`` naming the file (and the field), never a raw library traceback."""
from __future__ import annotations

import json
import os
import time

import pytest
import torch

import selfvos
from selfvos.errors import NonFiniteWeightsError, SelfvosInputError
from selfvos.hub.mixin import STALE_STAGING_SECONDS


def killed_save(parent, name, age=0.0):
    """The staging folder a ``save_pretrained`` killed half-way leaves: ``.<name>.tmp-<12 hex>``."""
    staging = parent / f".{name}.tmp-0123456789ab"
    staging.mkdir(parents=True)
    (staging / "model.safetensors").write_bytes(b"half")
    if age:
        then = time.time() - age
        os.utime(staging, (then, then))
    return staging


def test_a_stale_staging_folder_is_removed_by_the_next_save(tmp_path, segmenter):
    own = killed_save(tmp_path, "ckpt")
    old_other = killed_save(tmp_path, "other", age=STALE_STAGING_SECONDS + 60)
    live_other = killed_save(tmp_path, "busy")  # maybe a save running in another process right now
    segmenter.save_pretrained(tmp_path / "ckpt")
    assert not own.exists() and not old_other.exists() and live_other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [live_other.name, "ckpt"]


def test_weights_get_the_same_permissions_as_config_json(checkpoint):
    umask = os.umask(0o022)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in checkpoint.iterdir()}
    assert modes == {"config.json": 0o666 & ~umask, "model.safetensors": 0o666 & ~umask}


def write_config(checkpoint, edit):
    document = json.loads((checkpoint / "config.json").read_text())
    edit(document["config"])
    (checkpoint / "config.json").write_text(json.dumps(document))


@pytest.mark.parametrize("field, value", [
    ("num_classes", "2"), ("num_classes", None), ("num_classes", [2]), ("num_classes", 2.5),
    ("temperature", "hot"), ("tie_heads", "yes"), ("encoder.kernel_size", {"k": 3}), ("encoder.channels", "4,8"),
])
def test_wrongly_typed_config_values_name_the_file_and_the_field(checkpoint, field, value):
    def edit(config):
        *parents, leaf = field.split(".")
        for key in parents:
            config = config[key]
        config[leaf] = value

    write_config(checkpoint, edit)
    with pytest.raises(SelfvosInputError) as caught:
        selfvos.from_pretrained(checkpoint)
    message = str(caught.value)
    assert caught.value.path == str(checkpoint / "config.json")
    assert message.startswith(f"{checkpoint / 'config.json'}: config does not fit TinySegmenter: {field}")
    assert message.count(str(checkpoint)) == 1  # the path is said once


def test_a_config_the_model_refuses_to_build_is_a_clean_error(checkpoint):
    write_config(checkpoint, lambda config: config.update(num_classes=-1))
    with pytest.raises(SelfvosInputError, match=r"config.json: TinySegmenter cannot be built from this config "
                                                r"\(RuntimeError: .*negative dimension"):
        selfvos.from_pretrained(checkpoint)


@pytest.mark.parametrize("text, problem", [
    ("", "not a readable JSON config"), ("{oops", "not a readable JSON config"),
    ("[1, 2]", "expected a JSON object, got list"), ('"text"', "expected a JSON object, got str"),
    ("null", "expected a JSON object, got NoneType"), ('{"config": {}}', "no 'architecture' name"),
    ('{"architecture": "test-tiny-segmenter", "config": null}', "no 'config' object"),
    (b"\xff\xfe\x00garbage", "not a readable JSON config"),
])
def test_a_config_json_that_is_not_a_config_names_the_file(checkpoint, text, problem):
    path = checkpoint / "config.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(SelfvosInputError) as caught:
        selfvos.from_pretrained(checkpoint)
    assert str(caught.value).startswith(f"{path}: {problem}")


@pytest.mark.parametrize("spoil", ["truncated", "header only", "empty", "text", "huge header length"])
def test_damaged_weights_name_the_file(checkpoint, spoil):
    path = checkpoint / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes({
        "truncated": data[: len(data) // 2], "header only": data[:8], "empty": b"",
        "text": b"this is not a safetensors file at all" * 4,
        "huge header length": (10 ** 12).to_bytes(8, "little") + b"{}",
    }[spoil])
    with pytest.raises(SelfvosInputError) as caught:
        selfvos.from_pretrained(checkpoint)
    assert str(caught.value).startswith(f"{path}: not a readable safetensors file (")


def test_nan_weights_are_neither_saved_nor_loaded_unless_allowed(tmp_path, hub_classes):
    model = hub_classes["trained_segmenter"]()
    with torch.no_grad():
        model.encoder[1].running_var[2] = float("nan")  # a BatchNorm statistic counts too
    with pytest.raises(NonFiniteWeightsError, match=r"refusing to save non-finite weights: encoder\.1\.running_var"):
        model.save_pretrained(tmp_path / "nan")
    assert not (tmp_path / "nan").exists()
    folder = model.save_pretrained(tmp_path / "nan", allow_nonfinite=True)
    with pytest.raises(SelfvosInputError, match=r"model\.safetensors: non-finite weights: encoder\.1\.running_var "
                                                r"\(1 NaN, 0 inf of 4 values\)"):
        hub_classes["segmenter"].from_pretrained(folder)
    loaded = hub_classes["segmenter"].from_pretrained(folder, allow_nonfinite=True)
    assert torch.isnan(loaded.encoder[1].running_var[2])


def test_a_config_far_larger_than_its_weights_is_refused_before_allocating(tmp_path):
    """A damaged config.json (a width of ten million) must not try to allocate the model it describes."""
    folder = selfvos.create_model("stm", decoder_dim=8).save_pretrained(tmp_path / "ckpt")
    document = json.loads((folder / "config.json").read_text())
    document["config"]["decoder_dim"] = 10_000_000
    (folder / "config.json").write_text(json.dumps(document))
    with pytest.raises(SelfvosInputError, match="config and weights do not belong together") as err:
        selfvos.from_pretrained(folder)
    assert str(err.value).startswith(str(folder / "config.json"))
