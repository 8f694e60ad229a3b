"""Resume after an interruption gives exactly the weights of an uninterrupted run, with step and round restored."""
from __future__ import annotations

import pytest
import torch
from tests.engine.engine_toys import flat_weights, make_parts, reset_accelerate_state, toy_config

from selfvos.engine import Callback, Trainer, latest_checkpoint
from selfvos.engine.optim import lr_factor
from selfvos.errors import SelfvosInputError

ROUNDS = (2, 4)  # a bootstrapping schedule: round 0 = 2 steps, round 1 = 4 steps (6 in all)


class Interrupted(RuntimeError):
    pass


class KillAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, metrics):
        if trainer.state.step == self.step:
            raise Interrupted(f"killed after step {self.step}")


class RoundLog(Callback):
    def __init__(self) -> None:
        self.ends = []

    def on_round_end(self, trainer, round_index):
        self.ends.append((round_index, trainer.state.step))


def drive(trainer: Trainer) -> None:
    """What a bootstrapping driver does: run the remaining rounds (relabeling would go in on_round_end)."""
    while trainer.state.round < len(ROUNDS):
        trainer.train(ROUNDS[trainer.state.round])


def run(out, callbacks=(), **overrides):
    # 10 clips in batches of 4 -> 2 batches per epoch: the resume point (step 3) lies mid-epoch 1.
    # drop=0.3 makes the objective draw random numbers, which must also replay identically.
    model, objective, data = make_parts(seed=3, drop=0.3, n=10)
    cfg = toy_config(out, **{"max_steps": 6, "save_every": 3, **overrides})
    trainer = Trainer(model, data, cfg, objective=objective, callbacks=list(callbacks))
    return trainer, model, objective


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path):
    full, full_model, full_objective = run(tmp_path / "full")
    drive(full)
    assert (full.state.step, full.state.round) == (6, 2)
    reference = {**flat_weights(full_model), "scale": full_objective.logit_scale.detach().clone()}
    reference_opt = full.optimizer.state_dict()
    reset_accelerate_state()

    first, _, _ = run(tmp_path / "cut", callbacks=[KillAt(3)])
    with pytest.raises(Interrupted):
        drive(first)
    assert latest_checkpoint(tmp_path / "cut" / "checkpoints").name == "step_0000003"
    reset_accelerate_state()

    rounds = RoundLog()
    resumed, model, objective = run(tmp_path / "cut", callbacks=[rounds])
    st = resumed.state
    assert (st.step, st.round, st.round_start, st.epoch) == (3, 1, 2, 1)
    assert resumed.scheduler.scheduler.last_epoch == 3
    assert resumed.accelerator.step == 3  # accumulation counter (micro-batches) restored
    drive(resumed)
    assert rounds.ends == [(1, 6)] and (st.step, st.round) == (6, 2)
    for key, value in flat_weights(model).items():
        assert torch.equal(value, reference[key]), key
    assert torch.equal(objective.logit_scale.detach(), reference["scale"])
    for pid, state in resumed.optimizer.state_dict()["state"].items():
        assert torch.equal(state["exp_avg_sq"], reference_opt["state"][pid]["exp_avg_sq"])


def test_resume_from_an_explicit_checkpoint_and_bad_paths(tmp_path):
    first, _, _ = run(tmp_path / "a")
    first.train(2)  # round 0 ends at step 2 and saves
    reset_accelerate_state()
    again, _, _ = run(tmp_path / "b", resume=str(tmp_path / "a" / "checkpoints" / "step_0000002"))
    assert (again.state.step, again.state.round, again.state.round_start) == (2, 1, 2)
    reset_accelerate_state()
    fresh, _, _ = run(tmp_path / "c", resume=None)
    assert fresh.state.step == 0
    reset_accelerate_state()
    with pytest.raises(SelfvosInputError, match="resume checkpoint folder not found"):
        run(tmp_path / "d", resume=str(tmp_path / "nowhere"))


def test_partial_checkpoints_are_never_resumed(tmp_path):
    first, _, _ = run(tmp_path)
    first.train(2)
    (tmp_path / "checkpoints" / "step_0000004.partial").mkdir()  # a save that died half-way
    reset_accelerate_state()
    again, _, _ = run(tmp_path)
    assert again.state.step == 2


def test_keep_checkpoints_prunes_the_oldest(tmp_path):
    trainer, _, _ = run(tmp_path, save_every=1, keep_checkpoints=2)
    trainer.train(4)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_0000003", "step_0000004"]


def test_a_finished_run_extended_with_more_steps_continues_on_the_stretched_schedule(tmp_path):
    done, _, _ = run(tmp_path, max_steps=4, save_every=0, warmup_steps=0, min_lr_ratio=0.1)
    done.train()
    assert done.state.step == 4 and done.train() == {}  # finished: nothing more to do at max_steps 4
    assert done.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.1)  # the end of the short cosine
    reset_accelerate_state()

    longer, _, _ = run(tmp_path, max_steps=8, save_every=0, warmup_steps=0, min_lr_ratio=0.1)
    assert (longer.state.step, longer.state.round) == (4, 1)
    halfway = lr_factor(4, total_steps=8, warmup_steps=0, schedule="cosine", min_lr_ratio=0.1)
    assert halfway == pytest.approx(0.55)
    assert all(g["lr"] == pytest.approx(1e-2 * halfway) for g in longer.optimizer.param_groups)
    seen = []

    class Lr(Callback):
        def on_step_end(self, trainer, metrics):
            seen.append(trainer.optimizer.param_groups[0]["lr"])

    longer.callbacks.append(Lr())
    longer.train()
    assert longer.state.step == 8
    expected = [1e-2 * lr_factor(s, total_steps=8, warmup_steps=0, schedule="cosine", min_lr_ratio=0.1)
                for s in range(5, 9)]
    assert seen == pytest.approx(expected)
