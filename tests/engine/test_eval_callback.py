"""EvalCallback: when it evaluates, how (unwrapped, eval mode, inference mode), best-model export and resume."""
from __future__ import annotations

import json
import logging

import pytest
import torch
from tests.engine.engine_toys import ToyClips, ToyConfig, flat_weights, make_parts, reset_accelerate_state, toy_config
from torch import nn

import selfvos
from selfvos.engine import Callback, EvalCallback, Trainer
from selfvos.errors import SelfvosInputError


class Scripted:
    """An ``evaluate`` returning the next of ``scores``; records the step, the model's state and its weights."""

    def __init__(self, trainer_box, scores, metric="score"):
        self.box, self.scores, self.metric = trainer_box, list(scores), metric
        self.calls = []

    def __call__(self, model):
        trainer = self.box[0]
        self.calls.append({
            "step": trainer.state.step,
            "model": model,
            "training": model.training,
            "inference": torch.is_inference_mode_enabled(),
            "weights": flat_weights(model),
        })
        score = self.scores.pop(0)
        return {self.metric: score, "other": torch.tensor(2.0 * score, dtype=torch.float64)}


class TrainStarts(Callback):
    def __init__(self):
        self.steps = []

    def on_train_start(self, trainer):
        self.steps.append(trainer.state.step)


def make(tmp_path, scores, every=2, mode="max", callbacks=(), config=None, **cfg):
    model, objective, data = make_parts(seed=1, config=config)
    box = []
    evaluate = Scripted(box, scores)
    callback = EvalCallback(evaluate, every=every, metric="score", mode=mode)
    trainer = Trainer(model, data, toy_config(tmp_path, **cfg), objective=objective,
                      callbacks=[callback, *callbacks])
    box.append(trainer)
    logged = []
    trainer.tracker.log_metrics = lambda metrics, step: logged.append((step, dict(metrics)))
    return trainer, model, evaluate, callback, logged


def test_evaluates_every_n_steps_and_at_the_end_once(tmp_path, caplog):
    starts = TrainStarts()
    trainer, model, evaluate, callback, logged = make(tmp_path / "a", [0.5, 0.7, 0.6], max_steps=5,
                                                      callbacks=[starts])
    with caplog.at_level(logging.INFO, logger="selfvos.engine.callbacks"):
        trainer.train()
    assert [c["step"] for c in evaluate.calls] == [2, 4, 5]
    assert starts.steps == [0]
    for call in evaluate.calls:
        assert call["model"] is model and not call["training"] and call["inference"]
    assert model.training  # restored after each evaluation
    val = [(step, m) for step, m in logged if any(k.startswith("val/") for k in m)]
    assert val == [(2, {"val/score": 0.5, "val/other": 1.0}), (4, {"val/score": 0.7, "val/other": 1.4}),
                   (5, {"val/score": 0.6, "val/other": 1.2})]
    assert "step 4 validation: score=0.7000" in caplog.text
    assert callback.best == (0.7, 4) and callback.last_metrics["score"] == 0.6

    reset_accelerate_state()  # the last step is a multiple of every: evaluated once; rounds end with one too
    trainer, _, evaluate, _, _ = make(tmp_path / "b", [0.1] * 5, max_steps=6, callbacks=[starts])
    trainer.train(3)
    trainer.train(3)
    assert [c["step"] for c in evaluate.calls] == [2, 3, 4, 6]
    assert starts.steps == [0, 0, 3]


def test_the_best_model_is_exported_only_on_improvement(tmp_path):
    trainer, model, evaluate, callback, _ = make(tmp_path, [0.5, 0.7, 0.6], max_steps=5)
    trainer.train()
    best_dir = tmp_path / "best"
    record = json.loads((best_dir / "best.json").read_text())
    assert record == {"metric": "score", "value": 0.7, "step": 4, "metrics": {"score": 0.7, "other": 1.4}}
    loaded = selfvos.from_pretrained(best_dir)
    step4, step5 = evaluate.calls[1]["weights"], evaluate.calls[2]["weights"]
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, step4[key]), key
    assert not all(torch.equal(step4[k], step5[k]) for k in step4)  # step 5 differs and was not saved
    assert sorted(p.name for p in best_dir.iterdir()) == ["best.json", "config.json", "model.safetensors"]


def test_min_mode_and_an_explicit_best_dir(tmp_path):
    model, objective, data = make_parts(seed=1)
    box = []
    evaluate = Scripted(box, [3.0, 1.0, 2.0])
    callback = EvalCallback(evaluate, every=1, metric="score", mode="min", best_dir=tmp_path / "lowest")
    trainer = Trainer(model, data, toy_config(tmp_path / "run", max_steps=3), objective=objective,
                      callbacks=[callback])
    box.append(trainer)
    trainer.train()
    assert callback.best == (1.0, 2)
    assert json.loads((tmp_path / "lowest" / "best.json").read_text())["step"] == 2
    assert not (tmp_path / "run" / "best").exists()


def test_the_best_survives_a_resume(tmp_path):
    first, *_ = make(tmp_path, [0.9, 0.3], max_steps=4, save_every=2)
    first.train()
    assert first.callbacks[0].best == (0.9, 2)
    weights_at_2 = (tmp_path / "best" / "model.safetensors").read_bytes()
    reset_accelerate_state()

    resumed, model, evaluate, callback, _ = make(tmp_path, [0.8, 0.95], max_steps=8, every=2)
    assert resumed.state.step == 4
    resumed.train(2)  # step 6: 0.8 does not beat the 0.9 of the first run
    assert [c["step"] for c in evaluate.calls] == [6] and callback.best == (0.9, 2)
    assert (tmp_path / "best" / "model.safetensors").read_bytes() == weights_at_2
    resumed.train(2)  # step 8: 0.95 does
    assert callback.best == (0.95, 8)
    assert json.loads((tmp_path / "best" / "best.json").read_text())["step"] == 8

    reset_accelerate_state()  # constructed with an explicit best_dir, the record is read at once
    again = EvalCallback(lambda m: {"score": 0.0}, every=1, metric="score", best_dir=tmp_path / "best")
    assert again.best == (0.95, 8)
    with pytest.raises(SelfvosInputError, match="records the best 'score', but this EvalCallback tracks 'J'"):
        EvalCallback(lambda m: {"J": 0.0}, every=1, metric="J", best_dir=tmp_path / "best")


def test_frozen_batchnorm_stays_frozen_across_evaluations(tmp_path):
    trainer, model, evaluate, _, _ = make(tmp_path, [0.1, 0.2, 0.3], every=1, max_steps=3, freeze_bn=True,
                                          config=ToyConfig(norm="batch"))
    bn = model.backbone[1]
    start = bn.running_mean.clone()
    trainer.train()
    assert len(evaluate.calls) == 3 and torch.equal(bn.running_mean, start) and bn.num_batches_tracked == 0


def test_bad_arguments_and_results_are_named(tmp_path):
    with pytest.raises(ValueError, match="mode must be one of"):
        EvalCallback(lambda m: {}, every=1, metric="J", mode="best")
    with pytest.raises(ValueError, match="every must be an int >= 0"):
        EvalCallback(lambda m: {}, every=-1, metric="J")
    model, objective, data = make_parts(seed=1)
    callback = EvalCallback(lambda m: {"F": 0.5}, every=1, metric="J")
    trainer = Trainer(model, data, toy_config(tmp_path, max_steps=2), objective=objective, callbacks=[callback])
    with pytest.raises(KeyError, match="metric 'J' is not among the evaluated metrics \\['F'\\]"):
        trainer.train()
    reset_accelerate_state()

    plain = nn.Conv2d(3, 1, 1)
    callback = EvalCallback(lambda m: {"J": 0.5}, every=1, metric="J")
    trainer = Trainer(plain, ToyClips(8), toy_config(tmp_path / "plain", max_steps=1), callbacks=[callback],
                      objective=lambda m, b: {"loss": m(b["frames"].flatten(0, 1)).mean()})
    with pytest.raises(TypeError, match="Conv2d is not a selfvos.hub.SelfvosModelMixin"):
        trainer.train()
