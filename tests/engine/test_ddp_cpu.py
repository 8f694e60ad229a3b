"""Two CPU processes with DDP (gloo) match one process with the same global batch; only rank 0 logs and saves.

Launched as a user would (BRIEF section 6): ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu
--num_processes 2`` (``--cpu --num_processes 2`` would start only one process). A free port is picked so
parallel runs on the same machine do not collide (``debug_launcher`` always uses port 29500).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.engine.ddp_worker import main as run_worker
from mlflow import MlflowClient

from selfvos.engine import load_exported

WORKER = Path(__file__).with_name("ddp_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_equals_one_process(tmp_path):
    ddp_out, single_out = tmp_path / "ddp", tmp_path / "single"
    ddp_out.mkdir()
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), str(WORKER), str(ddp_out), "2",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [json.loads((ddp_out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["num_processes"] for r in ranks] == [2, 2] and "MULTI_CPU" in ranks[0]["distributed_type"]

    run_worker(single_out, 1)  # the same run in this process: batch 4 instead of 2 x 2
    single = json.loads((single_out / "rank0.json").read_text())
    assert single["num_processes"] == 1

    # same losses (averaged over processes) and same weights
    for r in ranks:
        assert r["losses"] == pytest.approx(single["losses"], rel=1e-5) and r["step"] == 3
    ddp_w, single_w = load_exported(ddp_out / "export"), load_exported(single_out / "export")
    for name, state in single_w.state_dicts.items():
        for key, value in state.items():
            torch.testing.assert_close(ddp_w.state_dicts[name][key], value, rtol=1e-5, atol=1e-6)

    # only the main process logs: one MLflow run, known to rank 0 only
    assert [r["tracker_enabled"] for r in ranks] == [True, False]
    assert ranks[0]["run_id"] and ranks[1]["run_id"] == ""
    client = MlflowClient(tracking_uri=f"sqlite:///{ddp_out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert [run.info.run_id for run in runs] == [ranks[0]["run_id"]]
    assert [m.step for m in client.get_metric_history(ranks[0]["run_id"], "loss")] == [1, 2, 3]

    # saving: one set of weights per checkpoint, RNG state per process, no partial folders
    ckpts = sorted(p.name for p in (ddp_out / "checkpoints").iterdir())
    assert ckpts == ["step_0000002", "step_0000003"]
    files = sorted(p.name for p in (ddp_out / "checkpoints" / "step_0000002").iterdir())
    assert files.count("model.safetensors") == 1 and {"random_states_0.pkl", "random_states_1.pkl"} <= set(files)
    assert sorted(p.name for p in (ddp_out / "export").iterdir()) == ["config.json", "model.safetensors",
                                                                    "objective.safetensors"]
