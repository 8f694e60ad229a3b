"""The training record written with every export (``training.json``): what it holds, that it round-trips, that
the model card renders it, and that the card warns when the weights are not the ones the record describes."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

import selfvos
from selfvos.config import to_dict
from selfvos.errors import SelfvosInputError
from selfvos.hub.card import render_model_card
from selfvos.hub.record import read_training_record, weights_sha256, write_training_record

from .conftest import EncoderConfig, TinyConfig, trained_segmenter

RUN_CONFIG = TinyConfig(encoder=EncoderConfig(channels=(4, 6, 8)), note="a run config")


def record_into(checkpoint, **changes):
    """Write a training record for ``checkpoint`` (fine-tuning-like defaults, overridden by ``changes``)."""
    kwargs = dict(recipe="recipes/finetune.py", data=["davis:/data/davis2016-train-240p", "synthetic"],
                  config=RUN_CONFIG, step=7, train_videos=["bear", "boat"])
    return write_training_record(checkpoint, **{**kwargs, **changes})


def test_the_record_round_trips_with_provenance(tmp_path, checkpoint):
    init = trained_segmenter(seed=3).save_pretrained(tmp_path / "init")
    before = datetime.now(timezone.utc).replace(microsecond=0)
    path = record_into(checkpoint, init=init)
    assert path == checkpoint / "training.json"
    assert sorted(p.name for p in checkpoint.iterdir()) == ["config.json", "model.safetensors", "training.json"]
    record = read_training_record(checkpoint)
    assert record == json.loads(path.read_text()) == read_training_record(path)
    assert record["recipe"] == "recipes/finetune.py"
    assert record["data"] == ["davis:/data/davis2016-train-240p", "synthetic"]
    assert record["config"] == json.loads(json.dumps(to_dict(RUN_CONFIG)))
    assert record["init"] == str(init) and record["init_sha256"] == weights_sha256(init)
    assert record["selfvos_version"] == selfvos.__version__
    assert record["weights_sha256"] == weights_sha256(checkpoint)
    assert before <= datetime.fromisoformat(record["date"]) <= datetime.now(timezone.utc) + timedelta(seconds=1)
    assert record["step"] == 7 and record["train_videos"] == ["bear", "boat"]


@pytest.mark.parametrize("init", [None, "scratch"])
def test_a_random_initialisation_is_recorded_as_scratch(checkpoint, init):
    record = read_training_record(record_into(checkpoint, init=init, data="synthetic"))
    assert record["init"] == "scratch" and record["init_sha256"] is None and record["data"] == ["synthetic"]


def test_the_card_renders_the_record(tmp_path, checkpoint):
    init = trained_segmenter(seed=3).save_pretrained(tmp_path / "init")
    record_into(checkpoint, init=init)
    card = render_model_card(checkpoint, "org/tiny")
    training = card.split("## Training data")[1].split("## Recipe and configuration")[0]
    assert "Datasets: `davis:/data/davis2016-train-240p`, `synthetic`" in training
    assert "- steps: 7" in training and "- train_videos: bear, boat" in training
    assert f"- initialised from: `{init}` (weights {weights_sha256(init)[:12]})" in training
    assert f"- recorded by selfvos {selfvos.__version__} on " in training
    assert "Warning" not in card and "Not recorded" not in card and "was not recorded" not in card
    recipe = card.split("## Recipe and configuration")[1].split("## How to use")[0]
    assert "Trained with `recipes/finetune.py`." in recipe
    assert "note: a run config" in recipe  # the full run config from training.json


def test_a_scratch_record_says_random_initialisation(checkpoint):
    record_into(checkpoint)
    assert "- initialised from: random initialisation (scratch)" in render_model_card(checkpoint, "org/tiny")


def test_weights_replaced_after_the_record_make_the_card_warn(checkpoint):
    record = read_training_record(record_into(checkpoint))
    trained_segmenter(seed=5).save_pretrained(checkpoint)  # other weights, the old training.json stays
    card = render_model_card(checkpoint, "org/tiny")
    assert (f"> **Warning:** `training.json` was recorded for weights {record['weights_sha256'][:12]}, but "
            f"`model.safetensors` is {weights_sha256(checkpoint)[:12]}") in card


def test_weights_edited_in_place_make_the_card_warn(checkpoint):
    record_into(checkpoint)
    weights = checkpoint / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of one stored value: the file still loads
    weights.write_bytes(bytes(data))
    assert "> **Warning:** `training.json` was recorded for weights" in render_model_card(checkpoint, "org/tiny")


def test_a_record_without_a_fingerprint_gets_a_note(checkpoint):
    (checkpoint / "training.json").write_text(json.dumps({"datasets": ["davis2016-train-240p"], "recipe": "r.py"}))
    card = render_model_card(checkpoint, "org/tiny")
    assert "`training.json` records no weights fingerprint" in card and "Datasets: `davis2016-train-240p`" in card


def test_extras_cannot_overwrite_what_the_record_measures(checkpoint):
    with pytest.raises(TypeError, match="weights_sha256"):
        record_into(checkpoint, weights_sha256="0" * 64)
    assert not (checkpoint / "training.json").exists()


def test_a_record_needs_the_weights_first(tmp_path):
    (tmp_path / "export").mkdir()
    with pytest.raises(SelfvosInputError, match="no model.safetensors"):
        record_into(tmp_path / "export")
    assert list((tmp_path / "export").iterdir()) == []


@pytest.mark.parametrize("text, problem", [("{", "not a readable training JSON"), ("[1]", "expected a JSON object")])
def test_a_broken_record_names_the_file(checkpoint, text, problem):
    (checkpoint / "training.json").write_text(text)
    with pytest.raises(SelfvosInputError) as info:
        render_model_card(checkpoint, "org/tiny")
    assert str(info.value).startswith(f"{checkpoint / 'training.json'}: {problem}")
