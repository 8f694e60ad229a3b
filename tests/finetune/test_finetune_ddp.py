"""``recipes/finetune.py`` in 2 CPU processes (DDP, gloo) gives the weights of one process with the same
global batch (BatchNorm frozen, so per-process batches normalise alike)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from accelerate.utils import set_seed
from safetensors.torch import load_file

import selfvos
from tests.engine.ddp_worker import free_port

REPO = Path(__file__).resolve().parents[2]
TINY = ["--data.sources", "[synthetic:2]", "--data.holdout_every", "0", "--data.clips_per_video", "4",
        "--data.clip.size", "[48, 64]", "--data.clip.max_objects", "2", "--model.decoder_dim", "16",
        "--eval.enabled", "false", "--train.max_steps", "2", "--train.save_every", "0", "--train.tracking_uri",
        "null", "--train.cpu_threads", "1", "--init", "scratch"]


def run(out: Path, processes: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no", "--main_process_port", str(free_port()), "--num_processes", str(processes)]
    if processes > 1:
        launch.insert(3, "--multi_gpu")
    cmd = [*launch, str(REPO / "recipes" / "finetune.py"), *TINY, "--output-dir", str(out),
           "--train.batch_size", str(4 // processes)]
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_two_process_finetune_equals_one_process(tmp_path):
    for processes in (2, 1):
        done = run(tmp_path / f"p{processes}", processes)
        assert done.returncode == 0, done.stderr[-4000:]
    ddp = load_file(str(tmp_path / "p2" / "model" / "model.safetensors"))
    single = load_file(str(tmp_path / "p1" / "model" / "model.safetensors"))
    assert ddp.keys() == single.keys()
    for key, value in single.items():
        torch.testing.assert_close(ddp[key], value, rtol=1e-4, atol=1e-5, msg=key)
    set_seed(0)  # the recipe's initial weights: trained ones must differ from them
    initial = selfvos.create_model("stm", decoder_dim=16).state_dict()
    assert not torch.equal(initial["decoder.predict.weight"], single["decoder.predict.weight"])
