"""MLflow tracking with a sqlite store and no server: params, float metrics, images, rounds, resume."""
from __future__ import annotations

import numpy as np
import torch
from tests.engine.engine_toys import make_parts, reset_accelerate_state, toy_config
from mlflow import MlflowClient

from selfvos.engine import ExperimentTracker, Trainer, flatten_params
from selfvos.engine.tracking import default_artifact_location, to_float


def test_flatten_params_and_floats():
    nested = {"model": {"backbone": {"name": "resnet18", "stride": 8}}, "train": {"betas": (0.9, 0.99)}}
    assert flatten_params(nested) == {
        "model.backbone.name": "resnet18", "model.backbone.stride": "8", "train.betas": "[0.9, 0.99]",
    }
    assert to_float(torch.tensor([1.0, 3.0])) == 2.0 and to_float(np.float32(0.5)) == 0.5
    assert default_artifact_location("sqlite:////runs/a/mlflow.db") == "file:///runs/a/mlartifacts"
    assert default_artifact_location("http://server:5000") is None


def test_trainer_logs_params_metrics_images_and_rounds(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    model, objective, data = make_parts(seed=5)
    cfg = toy_config(tmp_path / "out", max_steps=4, log_every=2, tracking_uri=uri, experiment="engine-test",
                     run_name="toy-run")
    trainer = Trainer(model, data, cfg, objective=objective, run_config={"model": {"backbone": {"name": "toy"}}})
    trainer.train(4)
    trainer.log_round_metrics({"pseudo_J": 0.42})
    gallery = (np.arange(8 * 8 * 3) % 255).astype(np.uint8).reshape(8, 8, 3)
    trainer.tracker.log_image(gallery, "galleries/round_0.png")
    trainer.close()

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(trainer.state.run_id)
    assert run.info.run_name == "toy-run" and run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.01" and run.data.params["model.backbone.name"] == "toy"
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in history] == [2, 4]
    assert all(isinstance(m.value, float) and 0.0 < m.value < 1.0 for m in history)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "lr/backbone/decay")] == [2, 4]
    rounds = client.get_metric_history(run.info.run_id, "round/pseudo_J")
    assert [(m.step, m.value) for m in rounds] == [(1, 0.42)]
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "galleries")]
    assert artifacts == ["galleries/round_0.png"]
    assert (tmp_path / "mlartifacts").is_dir() and not (tmp_path / "out" / "mlruns").exists()

    reset_accelerate_state()  # a resumed trainer continues the same MLflow run
    model, objective, data = make_parts(seed=5)
    resumed = Trainer(model, data, toy_config(tmp_path / "out", **{**vars(cfg), "max_steps": 6}),
                      objective=objective, run_config={"model": {"backbone": {"name": "toy"}}})
    assert resumed.state.run_id == run.info.run_id
    resumed.train(2)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [2, 4, 6]
    experiment = client.get_experiment_by_name("engine-test")
    assert len(client.search_runs([experiment.experiment_id])) == 1


def test_tracking_off_is_a_clean_no_op(tmp_path):
    tracker = ExperimentTracker(None)
    assert not tracker.enabled and tracker.run_id == ""
    tracker.log_params({"a": 1})
    tracker.log_metrics({"loss": torch.tensor(1.0)}, step=1)
    tracker.log_image(np.zeros((2, 2, 3), np.uint8), "x.png")
    tracker.finish()
    model, objective, data = make_parts(seed=6)
    trainer = Trainer(model, data, toy_config(tmp_path, max_steps=1, tracking_uri=None), objective=objective)
    trainer.train()
    assert trainer.state.run_id == "" and not list(tmp_path.glob("*.db"))


def test_default_store_is_sqlite_in_output_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "fresh" / "run"
    model, objective, data = make_parts(seed=6)
    trainer = Trainer(model, data, toy_config(out, max_steps=1, tracking_uri="auto"), objective=objective)
    trainer.train()
    trainer.close()
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    assert client.get_run(trainer.state.run_id).data.metrics["loss"] > 0


def test_metric_names_mlflow_refuses_are_made_valid(tmp_path):
    from selfvos.engine.tracking import ExperimentTracker, metric_name

    assert metric_name("val/J&F") == "val/J_F" and metric_name("lr/backbone/decay") == "lr/backbone/decay"
    tracker = ExperimentTracker(f"sqlite:///{tmp_path / 'm.db'}", "names", None)
    tracker.log_metrics({"val/J&F": 61.5}, step=3)
    assert [m.value for m in tracker._client.get_metric_history(tracker.run_id, "val/J_F")] == [61.5]
