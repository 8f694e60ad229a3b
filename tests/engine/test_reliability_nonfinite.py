"""Issue 19, non-finite guard: a NaN/inf loss or gradient skips the update (weights and buffers untouched),
is counted and logged; too many in a row stop the run with the last good checkpoint intact; checkpoints,
exports, relabeling and loading refuse non-finite weights."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from mlflow import MlflowClient
from tests.engine.engine_toys import ToyConfig, flat_weights, make_parts, reset_accelerate_state, toy_config
from tests.engine.reliability_toys import NAN, FeedStep, PoisonedObjective

import selfvos
from selfvos.engine import Callback, Trainer
from selfvos.engine.checkpoint import list_checkpoints, verify_checkpoint
from selfvos.errors import NonFiniteWeightsError, SelfvosInputError, TrainingDiverged


def poisoned_trainer(out, steps=(), mode="input", start=0, norm="batch", **overrides):
    torch.manual_seed(0)
    model, _, data = make_parts(seed=0, config=ToyConfig(norm=norm))
    objective = PoisonedObjective(steps, mode, start)
    feed = FeedStep(objective, model)
    trainer = Trainer(model, data, toy_config(out, **overrides), objective=objective, callbacks=[feed])
    return trainer, model, feed


def all_finite(model) -> bool:
    return all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())


def test_nan_losses_mid_run_are_skipped_and_the_run_completes(tmp_path, caplog):
    trainer, model, feed = poisoned_trainer(tmp_path, steps={3, 5}, max_steps=6)
    with caplog.at_level("WARNING", logger="selfvos.engine.trainer"):
        trainer.train()
    st = trainer.state
    assert (st.step, st.nonfinite_skipped, st.nonfinite_streak) == (6, 2, 0)
    assert all_finite(model)
    for skipped in (3, 5):  # weights AND BatchNorm running statistics exactly as after the step before
        before, after = feed.after[skipped - 1][0], feed.after[skipped][0]
        assert all(torch.equal(before[k], after[k]) for k in before), skipped
        assert math.isnan(feed.after[skipped][1]["loss"])
    assert not torch.equal(feed.after[4][0]["head.weight"], feed.after[3][0]["head.weight"])  # training resumed
    assert [feed.after[s][1]["nonfinite_skipped"] for s in range(1, 7)] == [0, 0, 1, 1, 2, 2]
    warnings = [r.getMessage() for r in caplog.records if "update skipped" in r.getMessage()]
    assert len(warnings) == 2 and warnings[0].startswith("step 3: non-finite")
    assert trainer.scheduler.scheduler.last_epoch == 6  # the schedule still follows the step counter
    assert selfvos.from_pretrained(trainer.export()).config == model.config


def test_a_nan_gradient_with_a_finite_loss_is_skipped_even_without_clipping(tmp_path):
    trainer, model, feed = poisoned_trainer(tmp_path, steps={2}, mode="grad", max_steps=3, grad_clip=None)
    trainer.train()
    assert trainer.state.nonfinite_skipped == 1 and all_finite(model)
    assert math.isfinite(feed.after[2][1]["loss"]) and math.isnan(feed.after[2][1]["grad_norm"])
    assert all(torch.equal(feed.after[1][0][k], v) for k, v in feed.after[2][0].items())


def test_a_nan_loss_with_finite_gradients_is_skipped(tmp_path):
    trainer, _, feed = poisoned_trainer(tmp_path, steps={2}, mode="loss", max_steps=3, grad_accum=2)
    trainer.train()
    assert trainer.state.nonfinite_skipped == 1
    assert math.isnan(feed.after[2][1]["loss"]) and math.isfinite(feed.after[2][1]["grad_norm"])
    assert all(torch.equal(feed.after[1][0][k], v) for k, v in feed.after[2][0].items())


def test_consecutive_nan_steps_stop_the_run_with_the_last_good_checkpoint_intact(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "run"
    trainer, model, feed = poisoned_trainer(out, start=5, max_steps=12, save_every=2, max_nonfinite_steps=3,
                                            tracking_uri=uri)
    with pytest.raises(TrainingDiverged) as caught:
        trainer.train()
    err = caught.value
    assert (err.step, err.consecutive, trainer.state.step) == (7, 3, 7)
    good = out / "checkpoints" / "step_0000006"
    assert err.checkpoint == str(good)
    assert "training diverged at step 7: 3 updates in a row" in str(err)
    assert f"the last good checkpoint {good} is intact" in str(err)
    assert [step for step, _ in list_checkpoints(out / "checkpoints")] == [2, 4, 6]
    assert verify_checkpoint(good) is None and all_finite(model)
    assert all(torch.equal(feed.after[4][0][k], v) for k, v in flat_weights(model).items())  # 5-7 changed nothing
    run = MlflowClient(tracking_uri=uri).get_run(trainer.state.run_id)
    assert run.info.status == "FAILED"


def test_max_nonfinite_steps_zero_never_stops(tmp_path):
    trainer, model, _ = poisoned_trainer(tmp_path, start=1, max_steps=4, max_nonfinite_steps=0)
    initial = flat_weights(model)
    trainer.train()
    assert trainer.state.nonfinite_skipped == 4 and trainer.state.nonfinite_streak == 4
    assert all(torch.equal(initial[k], v) for k, v in flat_weights(model).items())


def test_exact_resume_holds_across_skipped_updates(tmp_path):
    full, full_model, _ = poisoned_trainer(tmp_path / "full", steps={2, 5}, max_steps=6, save_every=3)
    full.train()
    reference = flat_weights(full_model)
    reset_accelerate_state()

    class Stop(Callback):
        def on_step_end(self, trainer, metrics):
            if trainer.state.step == 4:
                raise KeyboardInterrupt

    cut, _, _ = poisoned_trainer(tmp_path / "cut", steps={2, 5}, max_steps=6, save_every=3)
    cut.callbacks.append(Stop())
    with pytest.raises(KeyboardInterrupt):
        cut.train()
    reset_accelerate_state()
    resumed, model, _ = poisoned_trainer(tmp_path / "cut", steps={2, 5}, max_steps=6, save_every=3)
    assert (resumed.state.step, resumed.state.nonfinite_skipped) == (3, 1)
    resumed.train()
    assert resumed.state.nonfinite_skipped == full.state.nonfinite_skipped == 2
    assert all(torch.equal(reference[k], v) for k, v in flat_weights(model).items())


def test_checkpoints_and_exports_of_nan_weights_are_refused(tmp_path):
    trainer, model, _ = poisoned_trainer(tmp_path, max_steps=2, save_every=1, keep_checkpoints=1)
    trainer.train()
    checkpoints = tmp_path / "checkpoints"
    assert [p.name for _, p in list_checkpoints(checkpoints)] == ["step_0000002"]
    with torch.no_grad():
        model.head.weight[0, 0] = NAN
    trainer.state.step = 3
    with pytest.raises(NonFiniteWeightsError, match=r"step_0000003: refusing to write this checkpoint .*"
                                                    r"model\.head\.weight \(1 NaN, 0 inf of 8 values\)"):
        trainer.save_state()
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_0000002"]  # nothing rotated away
    assert verify_checkpoint(checkpoints / "step_0000002") is None
    with pytest.raises(NonFiniteWeightsError, match="refusing to export the model") as caught:
        trainer.export(tmp_path / "export")
    assert caught.value.tensor == "head.weight" and not (tmp_path / "export").exists()
    with pytest.raises(NonFiniteWeightsError, match="refusing to save non-finite weights"):
        model.save_pretrained(tmp_path / "direct")
    assert not (tmp_path / "direct").exists() and not list(tmp_path.glob(".direct.tmp-*"))


def test_loading_nan_weights_fails_cleanly_unless_allowed(tmp_path):
    model, _, _ = make_parts(seed=1)
    with torch.no_grad():
        model.backbone[0].bias[1] = float("inf")
    folder = model.save_pretrained(tmp_path / "diverged", allow_nonfinite=True)
    with pytest.raises(SelfvosInputError) as caught:
        selfvos.from_pretrained(folder)
    assert str(caught.value).startswith(f"{folder / 'model.safetensors'}: non-finite weights: backbone.0.bias "
                                        "(0 NaN, 1 inf of 8 values)")
    assert "allow_nonfinite=True" in str(caught.value)
    loaded = selfvos.from_pretrained(folder, allow_nonfinite=True)
    assert torch.isinf(loaded.backbone[0].bias[1])


def test_relabeling_from_nan_weights_is_refused_before_any_mask_is_written(tmp_path):
    from selfvos.pretrain.relabel import RelabelCallback, RoundMaskProvider
    from selfvos.pseudo.store import PseudoLabelStore

    trainer, model, _ = poisoned_trainer(tmp_path / "run", max_steps=1)
    store = PseudoLabelStore(tmp_path / "store")
    cfg = SimpleNamespace(bootstrap=SimpleNamespace(rounds=3, relabel_after_last=False))
    relabel = RelabelCallback(cfg, collection=None, store=store, provider=RoundMaskProvider(store))
    with torch.no_grad():
        model.head.bias.fill_(NAN)
    with pytest.raises(NonFiniteWeightsError, match=r"round_001: refusing to relabel round 1: .*head\.bias"):
        relabel.on_round_end(trainer, 0)
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").iterdir())


def test_the_best_model_is_not_saved_from_nan_weights(tmp_path):
    from selfvos.engine import EvalCallback

    trainer, model, _ = poisoned_trainer(tmp_path, max_steps=1)
    best = EvalCallback(lambda m: {"score": 1.0}, every=0, metric="score", best_dir=tmp_path / "best")
    with torch.no_grad():
        model.head.weight.fill_(float("inf"))
    with pytest.raises(NonFiniteWeightsError, match=r"best: refusing to save the best model: .*head\.weight"):
        best.run(trainer)
    assert best.best is None and not (tmp_path / "best").exists()
