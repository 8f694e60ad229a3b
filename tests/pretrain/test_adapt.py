"""Label-free adaptation (``selfvos adapt``): a tiny MuG checkpoint adapted to built-in synthetic videos within a
wall-clock budget of seconds; strict initialisation; the CLI's one-line errors; the trainer's wall-clock limit."""
from __future__ import annotations

import json
import time

import pytest
import torch

import selfvos
from selfvos.cli import main
from selfvos.engine import Trainer, latest_checkpoint
from selfvos.errors import SelfvosInputError
from selfvos.hub.record import weights_sha256, write_training_record
from selfvos.pretrain.adapt import (
    DAVIS_CPU_CLIP_SIZE,
    FRAME_MAX_SIDE,
    WallClockBudget,
    adapt,
    build_config,
    choose_frame_step,
)
from selfvos.pretrain.recipe import PretrainConfig
from selfvos.pseudo import PseudoLabelStore
from tests.engine.engine_toys import (
    ToyModel,
    make_parts,
    reset_accelerate_state,
    toy_config,
)
from tests.pretrain.conftest import small_model

pytestmark = pytest.mark.usefixtures("one_thread")

BUDGET_MINUTES = 0.25  # 15 s for loading, pseudo-labels, two training rounds, a relabel pass and the export
TINY = {  # 2 synthetic videos of 6 frames at 64x64, no MLflow (its database set-up alone takes seconds)
    "data.options": {"num_videos": 2, "num_frames": 6, "size": [64, 64]},
    "data.clips_per_video": 2,
    "clip.size": [64, 64],
    "train.batch_size": 2,
    "train.cpu_threads": 1,
    "train.tracking_uri": None,
    "bootstrap.grabcut_iterations": 0,
}


@pytest.fixture(autouse=True)
def _fresh_accelerate():
    reset_accelerate_state()
    yield
    reset_accelerate_state()


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A tiny MuG checkpoint (no training.json: the DAVIS CPU recipe's settings apply unless overridden)."""
    return small_model(seed=1).save_pretrained(tmp_path_factory.mktemp("parent") / "model")


@pytest.fixture(scope="module")
def adapted(parent, tmp_path_factory):
    """One adaptation through the CLI within BUDGET_MINUTES: (run folder, seconds it took, stdout)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("adapt") / "run"
    args = ["adapt", "--checkpoint", str(parent), "--data", "synthetic", "--out", str(out),
            "--minutes", str(BUDGET_MINUTES), "--adapt.reserve_seconds", "2"]
    args += [f"--{key}={json.dumps(value)}" for key, value in TINY.items()]
    reset_accelerate_state()
    stdout = io.StringIO()
    start = time.monotonic()
    with contextlib.redirect_stdout(stdout):
        code = main(args)
    seconds = time.monotonic() - start
    reset_accelerate_state()
    assert code == 0
    return out, seconds, stdout.getvalue()


def differs(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Whether any tensor of ``a`` and ``b`` (same names) differs."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return any(not torch.equal(sa[k], sb[k]) for k in sa)


def test_adapt_stops_on_the_budget_and_exports_a_loadable_changed_model(parent, adapted):
    out, seconds, stdout = adapted
    model_dir = out / "model"
    assert f"adapted model: {model_dir}" in stdout
    assert seconds <= 60 * BUDGET_MINUTES + 3, f"{seconds:.1f} s for a {60 * BUDGET_MINUTES:.0f} s budget"
    model = selfvos.from_pretrained(model_dir)
    assert model.config == selfvos.from_pretrained(parent).config  # the checkpoint's own architecture
    assert differs(model, selfvos.from_pretrained(parent))
    record = json.loads((model_dir / "training.json").read_text())
    assert record["recipe"] == "selfvos adapt" and record["data"] == ["synthetic"]
    assert record["init"] == str(parent) and record["init_sha256"] == weights_sha256(parent)
    assert record["weights_sha256"] == weights_sha256(model_dir)
    summary = record["adapt"]
    assert summary["parent"] == str(parent) and summary["parent_sha256"] == weights_sha256(parent)
    assert summary["budget_minutes"] == BUDGET_MINUTES and summary["seconds_used"] <= 60 * BUDGET_MINUTES + 3
    # the deadline, not the step cap, ended training: at least one step in each of the 2 rounds
    assert 2 <= summary["steps"] == record["step"] < record["config"]["train"]["max_steps"]
    assert record["rounds"] == 2 and len(summary["sessions"][0]["round_seconds"]) == 2
    # round-0 pseudo-masks and one relabel pass by the trained model, none after the last round
    store = PseudoLabelStore(out / "pseudo_labels")
    assert store.rounds() == [0, 1] and store.manifest(1)["labeler"]["type"] == "model"
    assert store.manifest(0)["frame_step"] == summary["frame_step"] == record["config"]["pseudo"]["frame_step"]
    assert record["config"]["pseudo"]["eval_gt"] is False  # the videos' masks are never read
    assert latest_checkpoint(out / "checkpoints") is not None


def test_a_finished_run_called_again_is_exported_again(parent, adapted):
    out, _, _ = adapted
    before = selfvos.from_pretrained(out / "model")
    result = adapt(parent, "synthetic", out, minutes=BUDGET_MINUTES, reserve_seconds=2, **TINY)
    sessions = json.loads((out / "adapt.json").read_text())["sessions"]
    assert len(sessions) == 2 and sessions[1]["start_step"] == sessions[1]["end_step"] == sessions[0]["end_step"]
    assert not differs(selfvos.from_pretrained(result), before)
    record = json.loads((result / "training.json").read_text())
    assert record["weights_sha256"] == weights_sha256(result) and record["adapt"]["sessions"] == sessions


def test_an_interrupted_run_resumes_with_its_plan_and_other_weights_are_refused(parent, tmp_path, monkeypatch):
    from selfvos.engine import trainer as trainer_module

    out, settings = tmp_path / "run", {**TINY, "train.save_every": 2}
    original, calls = trainer_module.Trainer._update, {"n": 0}

    def interrupt_at_the_third_step(self, batches):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated interruption")
        return original(self, batches)

    monkeypatch.setattr(trainer_module.Trainer, "_update", interrupt_at_the_third_step)
    with pytest.raises(KeyboardInterrupt):
        adapt(parent, "synthetic", out, minutes=0.2, reserve_seconds=2, **settings)
    plan = json.loads((out / "adapt.json").read_text())
    assert plan["sessions"] == [] and not (out / "model").exists()
    monkeypatch.setattr(trainer_module.Trainer, "_update", original)
    reset_accelerate_state()
    adapt(parent, "synthetic", out, minutes=0.2, reserve_seconds=2, **settings)
    resumed = json.loads((out / "adapt.json").read_text())
    assert resumed["frame_step"] == plan["frame_step"] and resumed["sessions"][0]["start_step"] == 2
    assert PseudoLabelStore(out / "pseudo_labels").rounds() == [0, 1]
    other = small_model(seed=2).save_pretrained(tmp_path / "other")
    with pytest.raises(SelfvosInputError, match="choose another --out"):
        adapt(other, "synthetic", out, minutes=0.2, **TINY)
    other = small_model(seed=2).save_pretrained(tmp_path / "other")
    with pytest.raises(SelfvosInputError, match="choose another --out"):
        adapt(other, "synthetic", out, minutes=BUDGET_MINUTES, **TINY)


def test_strict_init_refuses_another_architecture_or_shape(parent, tmp_path):
    toy = ToyModel().save_pretrained(tmp_path / "toy")
    with pytest.raises(SelfvosInputError, match="needs a 'mug' checkpoint") as err:
        adapt(toy, "synthetic", tmp_path / "a", minutes=1, **TINY)
    assert str(toy) in str(err.value)
    with pytest.raises(SelfvosInputError, match="shape mismatch") as err:  # an architecture override
        adapt(parent, "synthetic", tmp_path / "b", minutes=1, **{**TINY, "model.embed_dim": 16})
    assert str(parent) in str(err.value)
    assert not (tmp_path / "b" / "pseudo_labels").exists()  # refused before any work


def test_config_follows_the_parents_run_or_the_davis_cpu_recipe(parent, tmp_path):
    from selfvos.config import apply_overrides

    cfg = build_config(str(parent), selfvos.from_pretrained(parent).config, "frames:/videos", tmp_path, {})
    assert tuple(cfg.clip.size) == DAVIS_CPU_CLIP_SIZE and cfg.data.options == {"max_side": FRAME_MAX_SIDE}
    assert cfg.init == str(parent) and cfg.train.schedule == "constant" and cfg.train.lr == 5e-5
    assert build_config(str(parent), cfg.model, "synthetic", tmp_path, {}).data.options == {}  # cannot shrink
    # a parent whose training.json records its pretraining run: clips as it trained on them
    recorded = tmp_path / "recorded"
    small_model(seed=1).save_pretrained(recorded)
    run = apply_overrides(PretrainConfig(), {"clip.size": [48, 80], "clip.num_refs": 1, "objective.memory_weight": 0.25})
    write_training_record(recorded, recipe="recipes/mug_pretrain.py", data=["synthetic"], config=run)
    cfg = build_config(str(recorded), cfg.model, "synthetic", tmp_path, {"train.lr": 1e-4})
    assert tuple(cfg.clip.size) == (48, 80) and cfg.clip.num_refs == 1 and cfg.objective.memory_weight == 0.25
    assert cfg.train.lr == 1e-4
    with pytest.raises(SelfvosInputError, match="set by adapt itself"):
        build_config(str(recorded), cfg.model, "synthetic", tmp_path, {"init": "other"})


def test_frame_step_fits_the_label_share_and_a_hopeless_budget_is_refused():
    # 50 frames at 0.4 s (round 0) + 0.6 s (one relabel pass) per labelled frame; 40 % of 100 s = 40 s
    assert choose_frame_step([50], 0.4, 0.6, 1, 100.0, 0.4, 10) == 2  # 25 frames, 25 s
    assert choose_frame_step([50], 0.4, 0.6, 1, 1000.0, 0.4, 10) == 1
    assert choose_frame_step([50], 0.4, 0.6, 1, 10.0, 0.4, 10) == 10  # over the share, still time to train
    with pytest.raises(SelfvosInputError, match="--minutes"):
        choose_frame_step([50], 0.4, 0.6, 1, 4.0, 0.4, 10)


def test_budget_splits_the_time_left_over_the_rounds_left():
    class State:
        round, step = 0, 0

    class FakeTrainer:
        state, deadline = State(), None

    now = time.monotonic()
    budget = WallClockBudget(now + 100.0, rounds=2, relabel_seconds=10.0, relabel_after_last=False)
    trainer = FakeTrainer()
    budget.on_train_start(trainer)  # (100 - 10 for the one relabel pass) / 2 rounds
    assert trainer.deadline - now == pytest.approx(45.0, abs=1.0)
    trainer.state.round = 1
    budget.on_train_start(trainer)  # the last round gets all that is left
    assert trainer.deadline - now == pytest.approx(100.0, abs=1.0)
    assert budget.shares == pytest.approx([45.0, 100.0], abs=1.0) and budget.start_step == 0


@pytest.mark.parametrize("extra, problem", [
    (["--checkpoint", "no/such/ckpt"], "no/such/ckpt"),
    (["--data", "video:EMPTY"], "no video files"),
    (["--minutes", "0"], "--minutes"),
    (["--minutes", "nan"], "--minutes"),
    (["--minutes", "soon"], "--minutes"),
    (["--adapt.label_fraction", "2"], "label_fraction"),
    (["--train.lr", "1e-4", "stray"], "stray"),
    (["--train.max_minutes", "-1"], "max_minutes"),
])
def test_cli_errors_are_one_line_exit_2(parent, tmp_path, capsys, extra, problem):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = {"--checkpoint": str(parent), "--data": "synthetic", "--out": str(tmp_path / "out"), "--minutes": "1"}
    extra, tail = [token.replace("EMPTY", str(empty)) for token in extra], []
    while extra:
        token = extra.pop(0)
        if token in args:
            args[token] = extra.pop(0)
        else:
            tail.append(token)
    code = main(["adapt", *[x for pair in args.items() for x in pair], *tail])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("selfvos: error:")]
    assert len(lines) == 1 and problem in lines[0] and err.rstrip().endswith(lines[0])
    assert not (tmp_path / "out" / "model").exists()


def test_trainer_deadline_ends_the_round_in_time_and_leaves_a_resumable_checkpoint(tmp_path):
    model, objective, data = make_parts(seed=0)
    cfg = toy_config(tmp_path, max_steps=1_000_000, max_minutes=0.01, cpu_threads=1)  # 0.6 s
    trainer = Trainer(model, data, cfg, objective=objective)
    start = time.monotonic()
    trainer.train()
    assert time.monotonic() - start < 0.6 + 0.5  # the step in flight and the round-end checkpoint
    step = trainer.state.step
    assert 1 <= step < cfg.max_steps and trainer.state.round == 1
    assert latest_checkpoint(cfg.checkpoint_root).name == f"step_{step:07d}"
    reset_accelerate_state()
    model, objective, data = make_parts(seed=0)
    resumed = Trainer(model, data, cfg, objective=objective)
    assert (resumed.state.step, resumed.state.round, resumed.state.round_start) == (step, 1, step)
    resumed.deadline = time.monotonic() + 0.2  # an absolute deadline (what a budget callback sets)
    start = time.monotonic()
    resumed.train()
    assert time.monotonic() - start < 0.2 + 0.5 and step < resumed.state.step < cfg.max_steps
