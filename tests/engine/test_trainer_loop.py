"""The training loop on a tiny problem: the loss falls, accumulation is exact, rounds fire hooks and save."""
from __future__ import annotations

import math

import pytest
import torch
from tests.engine.engine_toys import (
    ToyClips, ToyModel, ToyObjective, flat_weights, make_parts, reset_accelerate_state, toy_config,
)

from selfvos.engine import Callback, Trainer


class Recorder(Callback):
    def __init__(self) -> None:
        self.steps, self.losses, self.metrics, self.rounds = [], [], [], []

    def on_step_end(self, trainer, metrics):
        self.steps.append(trainer.state.step)
        self.losses.append(metrics["loss"])
        self.metrics.append(metrics)

    def on_round_end(self, trainer, round_index):
        self.rounds.append((round_index, trainer.state.step))


def test_loss_falls_on_a_tiny_problem(tmp_path):
    model, objective, data = make_parts(seed=0)
    rec = Recorder()
    cfg = toy_config(tmp_path, max_steps=40, warmup_steps=2)
    trainer = Trainer(model, data, cfg, objective=objective, callbacks=[rec])
    trainer.train()
    first, last = sum(rec.losses[:5]) / 5, sum(rec.losses[-5:]) / 5
    assert rec.steps == list(range(1, 41))
    assert first > 0.6 and last < 0.75 * first, (first, last)
    m = rec.metrics[-1]
    assert set(m) >= {"loss", "frame_loss", "grad_norm", "lr/backbone/decay", "lr/head/no_decay"}
    assert all(isinstance(v, float) for v in m.values())
    assert m["lr/head/decay"] == pytest.approx(1e-2 * 0.5 * (1 + math.cos(math.pi * 37 / 38)))


def test_grad_accumulation_equals_the_larger_batch(tmp_path):
    """Batch 4 x 1 and batch 2 x accumulate 2 see the same samples per update: same weights after 3 updates."""
    results = []
    for batch_size, grad_accum in ((4, 1), (2, 2)):
        model, objective, data = make_parts(seed=1)
        cfg = toy_config(tmp_path / f"b{batch_size}", max_steps=3, batch_size=batch_size, grad_accum=grad_accum)
        trainer = Trainer(model, data, cfg, objective=objective)
        last = trainer.train()
        results.append((flat_weights(model), last["loss"], trainer.state.step))
        reset_accelerate_state()
    (w1, loss1, steps1), (w2, loss2, steps2) = results
    assert steps1 == steps2 == 3
    assert loss1 == pytest.approx(loss2, rel=1e-5)
    for key in w1:
        torch.testing.assert_close(w1[key], w2[key], rtol=1e-5, atol=1e-6)


def test_rounds_fire_hooks_and_save_resumable_checkpoints(tmp_path):
    model, objective, data = make_parts(seed=2)
    rec = Recorder()
    trainer = Trainer(model, data, toy_config(tmp_path, max_steps=5), objective=objective, callbacks=[rec])
    trainer.train(2)
    trainer.train(2)
    trainer.train(2)  # capped at max_steps = 5
    assert rec.rounds == [(0, 2), (1, 4), (2, 5)]
    assert (trainer.state.step, trainer.state.round, trainer.state.round_start) == (5, 3, 5)
    assert trainer.train(2) == {} and trainer.state.step == 5  # finished: nothing more happens
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_0000002", "step_0000004", "step_0000005"]
    assert (tmp_path / "checkpoints" / "step_0000004" / "model.safetensors").is_file()


def test_objective_must_return_a_loss_mapping(tmp_path):
    torch.manual_seed(0)
    trainer = Trainer(ToyModel(), ToyClips(8), toy_config(tmp_path), objective=lambda model, batch: 1.0)
    with pytest.raises(TypeError, match="'loss'"):
        trainer.train(1)


def test_too_small_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no full batch of 4"):
        Trainer(ToyModel(), ToyClips(3), toy_config(tmp_path), objective=lambda m, b: {"loss": 0})


class EpochAwareClips(ToyClips):
    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.epochs = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)


def test_dataset_hears_each_epoch(tmp_path):
    torch.manual_seed(0)
    data = EpochAwareClips(8)  # 2 batches of 4 per epoch: 5 steps span epochs 0, 1 and 2
    trainer = Trainer(ToyModel(), data, toy_config(tmp_path, max_steps=5), objective=ToyObjective())
    trainer.train()
    assert sorted(set(data.epochs)) == [0, 1, 2] and data.epochs[-1] == 2 and trainer.state.epoch == 2


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_and_keeps_fp32_weights(tmp_path, precision):
    model, objective, data = make_parts(seed=0)
    trainer = Trainer(model, data, toy_config(tmp_path, max_steps=3, mixed_precision=precision), objective=objective)
    assert trainer.accelerator.mixed_precision == precision
    last = trainer.train()
    assert 0.0 < last["loss"] < 1.0 and math.isfinite(last["grad_norm"])
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_a_foreign_accelerator_that_would_step_the_scheduler_per_process_is_refused(tmp_path):
    from accelerate import Accelerator

    with pytest.raises(ValueError, match="build_accelerator"):
        Trainer(ToyModel(), ToyClips(8), toy_config(tmp_path), objective=ToyObjective(), accelerator=Accelerator())
