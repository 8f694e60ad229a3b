"""The MuG pretraining pipeline end to end on tiny synthetic videos: rounds, export, MLflow, exact resume."""
import os

import pytest
import torch
from mlflow.tracking import MlflowClient

from selfvos.cli import main
from selfvos.config import apply_overrides
from selfvos.pretrain.recipe import PretrainConfig, run_pretraining
from selfvos.pseudo import PseudoLabelStore
from tests.engine.engine_toys import reset_accelerate_state

TINY = {
    "data.options": {"num_videos": 2, "num_frames": 6, "size": [64, 64]},
    "data.clips_per_video": 2,
    "clip.size": [64, 64],
    "train.max_steps": 4,
    "train.batch_size": 2,
    "train.warmup_steps": 1,
    "train.log_every": 1,
    "bootstrap.rounds": 2,
    "bootstrap.grabcut_iterations": 0,
}


@pytest.fixture(autouse=True)
def _fresh_accelerate():
    """Every run builds its Accelerator from scratch (as in tests/engine)."""
    reset_accelerate_state()
    yield
    reset_accelerate_state()


def tiny_config(out, **extra):
    return apply_overrides(PretrainConfig(), {**TINY, "train.output_dir": str(out), **extra})


def test_cli_smoke_run_writes_rounds_model_and_mlflow_run(tmp_path):
    import selfvos

    out = tmp_path / "run"
    args = ["pretrain", "--output-dir", str(out)] + [f"--{k}={v}" for k, v in TINY.items()]
    assert main(args) == 0
    store = PseudoLabelStore(out / "pseudo_labels")
    assert store.rounds() == [0, 1, 2]  # round 0 + one relabel per training round
    assert [store.manifest(r)["labeler"]["type"] for r in (0, 1, 2)] == ["fused", "model", "model"]
    assert all(store.manifest(r)["complete"] for r in (0, 1, 2))
    model = selfvos.from_pretrained(out / "model")
    assert type(model).__name__ == "MuGModel"
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])  # tests/conftest.py: a sqlite store per test
    run = client.search_runs([client.get_experiment_by_name("selfvos").experiment_id])[0]
    assert run.data.params["train.max_steps"] == "4" and run.data.params["bootstrap.rounds"] == "2"
    for key in ("loss", "frame", "tracking", "matching", "memory", "round/pseudo_mask_J"):
        assert key in run.data.metrics, key
    assert isinstance(run.data.metrics["loss"], float)
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "pseudo_labels")]
    assert sorted(artifacts) == [f"pseudo_labels/round_00{r}.png" for r in (0, 1, 2)]


def test_no_relabel_after_the_last_round_when_switched_off(tmp_path):
    """relabel_after_last=False: round 1 is still relabeled (round 2 trains on it), nothing after round 2."""
    out = run_pretraining(tiny_config(tmp_path / "run", **{"bootstrap.relabel_after_last": False}))
    assert PseudoLabelStore(tmp_path / "run" / "pseudo_labels").rounds() == [0, 1]
    assert (out / "model.safetensors").is_file()


def test_crop_from_trains_on_windows_and_relabels_whole_frames_at_the_larger_scale(tmp_path):
    """clip.crop_from: training items are clip.size windows; the relabel runs on whole frames at crop_from."""
    cfg = tiny_config(tmp_path / "run", **{"clip.size": [48, 48], "clip.crop_from": [64, 64], "bootstrap.rounds": 1})
    out = run_pretraining(cfg)
    store = PseudoLabelStore(tmp_path / "run" / "pseudo_labels")
    assert store.rounds() == [0, 1] and store.manifest(1)["labeler"]["size"] == [64, 64]
    assert (out / "model.safetensors").is_file()


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    from selfvos.engine import trainer as trainer_module

    reference = tiny_config(tmp_path / "a", **{"train.save_every": 1})
    run_pretraining(reference)

    interrupted = tiny_config(tmp_path / "b", **{"train.save_every": 1})
    original = trainer_module.Trainer._update
    calls = {"n": 0}

    def crash_after_three(self, batches):
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated interruption")
        calls["n"] += 1
        return original(self, batches)

    monkeypatch.setattr(trainer_module.Trainer, "_update", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        run_pretraining(interrupted)
    monkeypatch.setattr(trainer_module.Trainer, "_update", original)
    run_pretraining(interrupted)  # resume: auto

    from safetensors.torch import load_file

    a = load_file(tmp_path / "a" / "model" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # the relabeled rounds are identical too
    sa, sb = PseudoLabelStore(tmp_path / "a" / "pseudo_labels"), PseudoLabelStore(tmp_path / "b" / "pseudo_labels")
    assert sa.rounds() == sb.rounds() == [0, 1, 2]
    for name in ("synthetic_0000", "synthetic_0001"):
        assert (sa.read(2, name, 3) == sb.read(2, name, 3)).all()


def test_the_sfm_and_morel_switches_train_in_the_recipe(tmp_path):
    """--objective.sfm / --objective.morel: the recipe gives the motion heads the model's feature channels and
    the clips their flow; the motion heads are checkpointed with the objective, not exported with the model."""
    cfg = tiny_config(tmp_path / "run", **{"objective.sfm": True, "objective.morel": True, "bootstrap.rounds": 1,
                                           "train.max_steps": 2})
    out = run_pretraining(cfg)
    assert cfg.clip.flow
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as weights:
        assert not any("motion" in name for name in weights.keys())
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])  # tests/conftest.py: a sqlite store per test
    run = client.search_runs([client.get_experiment_by_name("selfvos").experiment_id])[0]
    assert run.data.metrics["sfm"] > 0 and run.data.metrics["morel"] > 0
