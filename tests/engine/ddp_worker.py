"""Run by ``test_ddp_cpu.py`` under ``accelerate launch``: the toy training in one of 2 CPU (gloo) processes.

Each process writes ``rank<i>.json`` (what it saw and whether it logs); the main process also exports.
Usage: ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 ddp_worker.py OUT_DIR``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, when run as a script

from tests.engine.engine_toys import make_parts, toy_config  # noqa: E402

from selfvos.engine import Callback, Trainer  # noqa: E402

SEED, STEPS, GLOBAL_BATCH = 7, 3, 4


class Losses(Callback):
    def __init__(self) -> None:
        self.losses = []

    def on_step_end(self, trainer, metrics):
        self.losses.append(metrics["loss"])


def main(out: Path, num_processes: int) -> None:
    torch.set_num_threads(1)
    model, objective, data = make_parts(seed=SEED, n=16)
    cfg = toy_config(
        out, max_steps=STEPS, batch_size=GLOBAL_BATCH // num_processes, save_every=2,
        tracking_uri=f"sqlite:///{out / 'mlflow.db'}", experiment="ddp",
    )
    losses = Losses()
    trainer = Trainer(model, data, cfg, objective=objective, callbacks=[losses])
    trainer.train()
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
    }
    (out / f"rank{acc.process_index}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 2)
