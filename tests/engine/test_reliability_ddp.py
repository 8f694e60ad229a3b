"""Issue 19, non-finite guard under DDP: a NaN on one process only makes every process skip the same update,
stop together, and refuse the same checkpoint (no rank steps alone, none waits forever). Slow: two processes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.engine.ddp_worker import free_port

WORKER = Path(__file__).with_name("ddp_nonfinite_worker.py")


def run_group(cmd, env, timeout):
    """Run ``cmd`` in its own process group; (exit code, stderr). On a timeout (ranks that disagree wait
    for each other forever) the whole group, workers included, is killed."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        return -1, f"timed out after {timeout} s (ranks disagree?)\n{stderr}"
    return proc.returncode, stderr


@pytest.mark.slow
def test_a_nan_on_one_rank_is_handled_by_all_ranks_together(tmp_path):
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), str(WORKER), str(tmp_path),
    ]
    returncode, stderr = run_group(cmd, env, timeout=240)
    assert returncode == 0, stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["skipped"] for r in ranks] == [1, 1] and all(r["finite"] for r in ranks)
    assert ranks[0]["params"] == ranks[1]["params"]
    checkpoint = str(tmp_path / "checkpoints" / "step_0000003")
    assert [r["diverged"] for r in ranks] == [[6, 2, checkpoint]] * 2
    refused = f"{tmp_path / 'checkpoints' / 'step_0000006'}: refusing to write this checkpoint"
    assert ranks[0]["refused"].startswith(refused) and ranks[0]["refused"].endswith("(on another process)")
    assert ranks[1]["refused"].startswith(refused)
    assert "model.head.bias (1 NaN, 0 inf of 1 values)" in ranks[1]["refused"]
    assert not (tmp_path / "checkpoints" / "step_0000006").exists()
