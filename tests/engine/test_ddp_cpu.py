"""Two CPU processes with DDP (gloo) match one process with the same global batch; only rank 0 logs, evaluates
and saves.

Launched as a user would (BRIEF section 6): ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu
--num_processes 2`` (``--cpu --num_processes 2`` would start only one process). A free port is picked so
parallel runs on the same machine do not collide (``debug_launcher`` always uses port 29500).
"""
from __future__ import annotations

import json

import pytest
import torch
from mlflow import MlflowClient
from tests.engine.ddp_worker import launch_two_processes
from tests.engine.ddp_worker import main as run_worker

import selfvos


def test_two_process_ddp_equals_one_process(tmp_path):
    ddp_out, single_out = tmp_path / "ddp", tmp_path / "single"
    ddp_out.mkdir()
    done = launch_two_processes(ddp_out)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [json.loads((ddp_out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["num_processes"] for r in ranks] == [2, 2] and "MULTI_CPU" in ranks[0]["distributed_type"]

    run_worker(single_out, 1)  # the same run in this process: batch 4 instead of 2 x 2
    single = json.loads((single_out / "rank0.json").read_text())
    assert single["num_processes"] == 1

    # same losses (averaged over processes) and same weights
    for r in ranks:
        assert r["losses"] == pytest.approx(single["losses"], rel=1e-5) and r["step"] == 3
    ddp_model = selfvos.from_pretrained(ddp_out / "export")
    single_model = selfvos.from_pretrained(single_out / "export")
    for key, value in single_model.state_dict().items():
        torch.testing.assert_close(ddp_model.state_dict()[key], value, rtol=1e-5, atol=1e-6)
    assert ranks[0]["logit_scale"] == pytest.approx(single["logit_scale"], rel=1e-5)

    # only the main process evaluates (steps 2 and 3); every process knows the best; one best export
    assert [r["evaluations"] for r in ranks] == [2, 0] and single["evaluations"] == 2
    assert [r["best"] for r in ranks] == [[0.2, 2], [0.2, 2]]
    assert json.loads((ddp_out / "best" / "best.json").read_text())["step"] == 2
    assert selfvos.from_pretrained(ddp_out / "best").config == ddp_model.config

    # only the main process logs: one MLflow run, known to rank 0 only
    assert [r["tracker_enabled"] for r in ranks] == [True, False]
    assert ranks[0]["run_id"] and ranks[1]["run_id"] == ""
    client = MlflowClient(tracking_uri=f"sqlite:///{ddp_out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert [run.info.run_id for run in runs] == [ranks[0]["run_id"]]
    assert [m.step for m in client.get_metric_history(ranks[0]["run_id"], "loss")] == [1, 2, 3]
    assert [m.step for m in client.get_metric_history(ranks[0]["run_id"], "val/score")] == [2, 3]

    # saving: one set of weights per checkpoint, RNG state per process, no partial folders
    ckpts = sorted(p.name for p in (ddp_out / "checkpoints").iterdir())
    assert ckpts == ["step_0000002", "step_0000003"]
    files = sorted(p.name for p in (ddp_out / "checkpoints" / "step_0000002").iterdir())
    assert files.count("model.safetensors") == 1 and {"random_states_0.pkl", "random_states_1.pkl"} <= set(files)
    assert sorted(p.name for p in (ddp_out / "export").iterdir()) == ["config.json", "model.safetensors"]
