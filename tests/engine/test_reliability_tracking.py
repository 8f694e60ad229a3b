"""Issue 19, tracking: an unreachable or failing MLflow server never stops training (one warning, tracking
off), crashed runs are marked FAILED / KILLED, and steps re-done after a resume are not logged twice."""
from __future__ import annotations

import os
import signal
import time

import pytest
from mlflow import MlflowClient
from tests.engine.engine_toys import make_parts, reset_accelerate_state, toy_config

from selfvos.engine import Callback, Trainer
from selfvos.engine.tracking import HTTP_DEFAULTS, ExperimentTracker, bounded_http

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: connection refused at once


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    """One sqlite store for the module (creating its tables takes seconds); each test has its own runs."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


class Crash(Callback):
    def __init__(self, step: int, error: BaseException) -> None:
        self.step, self.error = step, error

    def on_step_end(self, trainer, metrics):
        if trainer.state.step == self.step:
            raise self.error


def toy_trainer(out, callbacks=(), **overrides):
    model, objective, data = make_parts(seed=2, n=10)
    return Trainer(model, data, toy_config(out, **overrides), objective=objective, callbacks=list(callbacks))


def unreachable_warnings(caplog):
    return [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]


def test_an_unreachable_server_costs_one_warning_and_training_goes_on(tmp_path, monkeypatch, caplog):
    for name in HTTP_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    began = time.monotonic()
    with caplog.at_level("WARNING", logger="selfvos.engine.tracking"):
        trainer = toy_trainer(tmp_path, max_steps=3, tracking_uri=UNREACHABLE)
        trainer.train()
        trainer.tracker.log_image(None, "x.png")
        trainer.close()
    assert time.monotonic() - began < 30
    assert trainer.state.step == 3 and not trainer.tracker.enabled
    [message] = unreachable_warnings(caplog)
    assert message.startswith(f"tracking server {UNREACHABLE} unreachable (could not start the run: ")
    assert "training continues without tracking" in message
    assert not any(name in os.environ for name in HTTP_DEFAULTS)  # the bounds applied to MLflow's calls only


def test_bounded_http_keeps_the_users_settings(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "77")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    with bounded_http():
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "77"
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "77" and "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ


def test_a_server_lost_mid_run_turns_tracking_off_once(tmp_path, uri, caplog):
    trainer = toy_trainer(tmp_path / "out", max_steps=4, tracking_uri=uri)
    trainer.train(2)

    def gone(*args, **kwargs):
        raise ConnectionError("server went away")

    trainer.tracker._client.log_batch = gone
    trainer.tracker._client.set_terminated = gone
    with caplog.at_level("WARNING", logger="selfvos.engine.tracking"):
        trainer.train(2)
        trainer.close()
    assert trainer.state.step == 4
    [message] = unreachable_warnings(caplog)
    assert "could not log metrics: ConnectionError: server went away" in message
    history = MlflowClient(tracking_uri=uri).get_metric_history(trainer.state.run_id, "loss")
    assert [m.step for m in history] == [1, 2]  # later points dropped, as the warning says


@pytest.mark.parametrize("error, status", [(RuntimeError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")])
def test_a_crashed_run_is_not_left_running(tmp_path, uri, error, status):
    trainer = toy_trainer(tmp_path / "out", [Crash(2, error)], max_steps=4, tracking_uri=uri)
    with pytest.raises(type(error)):
        trainer.train()
    assert MlflowClient(tracking_uri=uri).get_run(trainer.state.run_id).info.status == status


def test_the_trainer_as_a_context_manager_closes_the_run(tmp_path, uri):
    with toy_trainer(tmp_path / "ok", max_steps=1, tracking_uri=uri) as ok:
        ok.train()
    reset_accelerate_state()
    with pytest.raises(ValueError), toy_trainer(tmp_path / "bad", max_steps=1, tracking_uri=uri) as bad:
        raise ValueError("export failed")
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(ok.state.run_id).info.status == "FINISHED"
    assert client.get_run(bad.state.run_id).info.status == "FAILED"


def test_steps_redone_after_a_resume_are_not_logged_twice(tmp_path, uri):
    settings = dict(max_steps=6, save_every=2, tracking_uri=uri)
    first = toy_trainer(tmp_path / "out", [Crash(3, RuntimeError("killed"))], **settings)
    with pytest.raises(RuntimeError):
        first.train()
    first.log_round_metrics({"pseudo_J": 0.5})  # round 0
    client = MlflowClient(tracking_uri=uri)
    assert [m.step for m in client.get_metric_history(first.state.run_id, "loss")] == [1, 2, 3]
    reset_accelerate_state()

    resumed = toy_trainer(tmp_path / "out", **settings)  # from step 2: step 3 is done again
    assert resumed.state.step == 2 and resumed.state.run_id == first.state.run_id
    resumed.log_round_metrics({"pseudo_J": 0.5})  # round 0 again: already there
    resumed.train()
    resumed.close()
    run_id = resumed.state.run_id
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2, 3, 4, 5, 6]
    assert [m.step for m in client.get_metric_history(run_id, "round/pseudo_J")] == [0]
    assert client.get_run(run_id).info.status == "FINISHED"


def test_tracker_keeps_the_run_id_it_could_not_reopen(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the user's setting wins: fail at once
    tracker = ExperimentTracker(UNREACHABLE, run_id="abc123")
    assert not tracker.enabled and tracker.run_id == "abc123" and "MlflowException" in tracker.error


def test_a_tracking_uri_mlflow_does_not_know_is_one_warning(caplog):
    with caplog.at_level("WARNING", logger="selfvos.engine.tracking"):
        tracker = ExperimentTracker("nosuchscheme://host/db")
        tracker.log_metrics({"loss": 1.0}, step=1)
        tracker.finish()
    assert not tracker.enabled and tracker.run_id == ""
    [message] = unreachable_warnings(caplog)
    assert message.startswith("tracking server nosuchscheme://host/db unreachable (could not connect: ")


class Terminate(Callback):
    """Sends this process SIGTERM (what a job scheduler or ``accelerate launch`` does) at ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, metrics):
        if trainer.state.step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_marks_the_run_killed_and_restores_the_handler(tmp_path, uri):
    before = signal.getsignal(signal.SIGTERM)
    trainer = toy_trainer(tmp_path / "out", [Terminate(2)], max_steps=6, tracking_uri=uri)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        trainer.train()
    assert trainer.state.step == 2
    assert MlflowClient(tracking_uri=uri).get_run(trainer.state.run_id).info.status == "KILLED"
    assert signal.getsignal(signal.SIGTERM) is before
