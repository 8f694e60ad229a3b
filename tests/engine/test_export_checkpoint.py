"""Trainer.export writes the save_pretrained format (objective left out); checkpoint discovery; training state."""
from __future__ import annotations

import json

import pytest
import torch
from tests.engine.engine_toys import ToyClips, ToyConfig, ToyModel, flat_weights, make_parts, toy_config
from torch import nn

import selfvos
from selfvos.engine import Trainer, TrainingState, latest_checkpoint, list_checkpoints


def test_trainer_export_is_loadable_with_from_pretrained_and_leaves_the_objective_out(tmp_path):
    model, objective, data = make_parts(seed=4, config=ToyConfig(width=6))
    trainer = Trainer(model, data, toy_config(tmp_path, max_steps=2), objective=objective)
    trainer.train()
    out = trainer.export()
    assert out == tmp_path / "export"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    document = json.loads((out / "config.json").read_text())
    assert document["architecture"] == "test-engine-toy" and document["config"]["width"] == 6
    loaded = selfvos.from_pretrained(out)
    assert type(loaded) is ToyModel and loaded.config == ToyConfig(width=6)
    for key, value in flat_weights(model).items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert objective.logit_scale.item() != 1.0  # it trained, but heads carry their own parameters

    again = trainer.export(tmp_path / "elsewhere")  # an explicit folder, replaced in place
    assert selfvos.from_pretrained(again).config.width == 6


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)

    def forward(self, frames):
        return self.conv(frames)


def test_export_of_a_model_without_save_pretrained_names_the_class(tmp_path):
    trainer = Trainer(Plain(), ToyClips(8), toy_config(tmp_path, max_steps=1),
                      objective=lambda m, b: {"loss": m(b["frames"].flatten(0, 1)).mean()})
    with pytest.raises(TypeError, match="Plain is not a selfvos.hub.SelfvosModelMixin"):
        trainer.export()
    assert not (tmp_path / "export").exists()


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
