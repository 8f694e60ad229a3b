"""Atomic safetensors export and load round trip; checkpoint discovery; the registered training state."""
from __future__ import annotations

import json

import pytest
import torch
from tests.engine.engine_toys import ToyModel, ToyObjective, flat_weights, make_parts, toy_config
from torch import nn

import selfvos.engine.checkpoint as ckpt
from selfvos.engine import Trainer, TrainingState, export_modules, latest_checkpoint, list_checkpoints, load_exported
from selfvos.errors import SelfvosInputError


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(4, 4)
        self.decoder = nn.Linear(4, 4)
        self.decoder.weight = self.encoder.weight


def test_export_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model, objective = ToyModel(), ToyObjective()
    with torch.no_grad():
        objective.logit_scale.fill_(2.5)
    out = export_modules(tmp_path / "export", {"model": model, "objective": objective}, {"type": "toy", "width": 8})
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "objective.safetensors"]
    torch.manual_seed(1)
    fresh_model, fresh_objective = ToyModel(), ToyObjective()
    loaded = load_exported(out, {"model": fresh_model, "objective": fresh_objective})
    assert loaded.config == {"type": "toy", "width": 8, "modules": ["model", "objective"]}
    for key, value in model.state_dict().items():
        assert torch.equal(fresh_model.state_dict()[key], value)
        assert torch.equal(loaded.state_dicts["model"][key], value)
    assert fresh_objective.logit_scale.item() == 2.5


def test_tied_weights_survive_the_round_trip(tmp_path):
    torch.manual_seed(0)
    tied = Tied()
    export_modules(tmp_path / "tied", {"net": tied}, {})
    other = Tied()
    load_exported(tmp_path / "tied", {"net": other})
    assert torch.equal(other.encoder.weight, tied.encoder.weight)
    assert other.decoder.weight is other.encoder.weight


def test_failed_export_leaves_the_previous_export_intact(tmp_path, monkeypatch):
    torch.manual_seed(0)
    first = ToyModel()
    export_modules(tmp_path / "export", {"model": first}, {"version": 1})
    calls = []

    def failing_save(module, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:
            raise OSError("disk full")
        (tmp_path / "written").write_text(filename)
        return real_save(module, filename, metadata=metadata)

    real_save = ckpt.save_model
    monkeypatch.setattr(ckpt, "save_model", failing_save)
    with pytest.raises(OSError, match="disk full"):
        export_modules(tmp_path / "export", {"model": ToyModel(), "objective": ToyObjective()}, {"version": 2})
    assert json.loads((tmp_path / "export" / "config.json").read_text())["version"] == 1
    assert not (tmp_path / "export" / "objective.safetensors").exists()
    loaded = load_exported(tmp_path / "export")
    assert torch.equal(loaded.state_dicts["model"]["head.weight"], first.head.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "written"]  # no temporary folders left


def test_export_replaces_an_old_export_completely(tmp_path):
    export_modules(tmp_path / "e", {"model": ToyModel(), "objective": ToyObjective()}, {})
    export_modules(tmp_path / "e", {"model": ToyModel()}, {})
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["e"]


def test_bad_exports_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(SelfvosInputError, match="config.json is missing"):
        load_exported(tmp_path)
    export_modules(tmp_path / "e", {"model": ToyModel(width=8)}, {})
    with pytest.raises(SelfvosInputError, match="model.safetensors: does not fit ToyModel"):
        load_exported(tmp_path / "e", {"model": ToyModel(width=4)})
    with pytest.raises(SelfvosInputError, match="no weights for module 'head'"):
        load_exported(tmp_path / "e", {"head": ToyModel()})
    (tmp_path / "e" / "model.safetensors").unlink()
    with pytest.raises(SelfvosInputError, match="model.safetensors: weights of module 'model'"):
        load_exported(tmp_path / "e")


def test_trainer_export_holds_model_objective_and_run_config(tmp_path):
    model, objective, data = make_parts(seed=4)
    trainer = Trainer(model, data, toy_config(tmp_path, max_steps=2), objective=objective,
                      run_config={"model": {"type": "toy"}})
    trainer.train()
    out = trainer.export()
    assert out == tmp_path / "export"
    loaded = load_exported(out)
    assert loaded.config["model"] == {"type": "toy"} and loaded.config["step"] == 2
    assert loaded.config["train"]["max_steps"] == 2 and loaded.config["round"] == 1
    for key, value in flat_weights(model).items():
        assert torch.equal(loaded.state_dicts["model"][key], value)
    assert "logit_scale" in loaded.state_dicts["objective"]


def test_checkpoint_listing_and_state_round_trip(tmp_path):
    for name in ("step_0000010", "step_0000002", "step_0000011.partial", "notes"):
        (tmp_path / name).mkdir()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 10]
    assert latest_checkpoint(tmp_path).name == "step_0000010"
    assert latest_checkpoint(tmp_path / "absent") is None
    state = TrainingState(step=7, round=2, round_start=5, epoch=3, run_id="abc")
    other = TrainingState()
    other.load_state_dict(state.state_dict())
    assert other == state
