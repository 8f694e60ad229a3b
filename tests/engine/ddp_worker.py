"""Run by the DDP tests under ``accelerate launch``: the toy training in one of 2 CPU (gloo) processes.

Each process writes ``rank<i>.json`` (what it saw and whether it logs); the main process also exports and
evaluates (``EvalCallback`` every 2 steps).
Usage: ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 ddp_worker.py OUT_DIR [N] [unused]``.
``unused``: the model has a parameter that gets no gradient, trained with ``find_unused_parameters=True``
(no MLflow, no checkpoints, no export: only the losses matter).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, when run as a script

from tests.engine.engine_toys import ToyConfig, make_parts, toy_config  # noqa: E402

from selfvos.engine import Callback, EvalCallback, Trainer  # noqa: E402

SEED, STEPS, GLOBAL_BATCH = 7, 3, 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two_processes(out: Path, *args: str) -> subprocess.CompletedProcess:
    """This script in 2 CPU processes, as a user launches it (``--cpu --num_processes 2`` would start only
    one); a free port so parallel runs on one machine do not collide (``debug_launcher`` always uses 29500)."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), str(Path(__file__).resolve()), str(out), "2", *args,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)


class Losses(Callback):
    def __init__(self) -> None:
        self.losses = []

    def on_step_end(self, trainer, metrics):
        self.losses.append(metrics["loss"])


class Scores:
    """``evaluate`` for EvalCallback: 0.2, then 0.1 (so the first evaluation stays the best)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, model):
        self.calls += 1
        return {"score": 0.2 if self.calls == 1 else 0.1}


def main(out: Path, num_processes: int, unused: bool = False) -> None:
    torch.set_num_threads(1)
    model, objective, data = make_parts(seed=SEED, n=16, config=ToyConfig(unused=unused))
    if unused:
        cfg = toy_config(out, max_steps=STEPS, batch_size=GLOBAL_BATCH // num_processes, find_unused_parameters=True)
    else:
        cfg = toy_config(
            out, max_steps=STEPS, batch_size=GLOBAL_BATCH // num_processes, save_every=2,
            tracking_uri=f"sqlite:///{out / 'mlflow.db'}", experiment="ddp",
        )
    losses, scores = Losses(), Scores()
    evaluation = EvalCallback(scores, every=2, metric="score")
    callbacks = [losses] if unused else [losses, evaluation]
    trainer = Trainer(model, data, cfg, objective=objective, callbacks=callbacks)
    trainer.train()
    if not unused:
        trainer.export()
    trainer.close()
    acc = trainer.accelerator
    record = {
        "rank": acc.process_index,
        "num_processes": acc.num_processes,
        "distributed_type": str(acc.distributed_type),
        "is_main": acc.is_main_process,
        "tracker_enabled": trainer.tracker.enabled,
        "run_id": trainer.state.run_id,
        "losses": losses.losses,
        "step": trainer.state.step,
        "logit_scale": objective.logit_scale.item(),
        "unused": model.unused.tolist() if unused else None,
        "evaluations": scores.calls,
        "best": evaluation.best,
    }
    (out / f"rank{acc.process_index}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 2, unused="unused" in sys.argv[3:])
