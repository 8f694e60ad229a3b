"""Run by ``test_validation_sharding`` under ``accelerate launch`` in 2 CPU processes: the fine-tuning recipe
with validation every step on 3 held-out synthetic videos, instrumented to record what each process did.

Each process writes ``rank<i>.json``: the videos it scored (in order), the metrics of each evaluation, how
many times it saved the best model, whether its tracker logs, and, after training, the J&F of the best
weights scored sharded over the processes and (main process) by that process alone.
Usage: ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 validation_worker.py OUT_DIR``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, when run as a script

from tests.engine.ddp_worker import free_port  # noqa: E402

import selfvos  # noqa: E402
from selfvos.data.supervised import SupervisedClipConfig  # noqa: E402
from selfvos.engine.callbacks import EvalCallback  # noqa: E402
from selfvos.finetune import recipe, validation  # noqa: E402
from selfvos.finetune.config import EvalConfig, FinetuneConfig  # noqa: E402

MAX_SIDE = 64


def launch(out: Path) -> subprocess.CompletedProcess:
    """This script in 2 CPU processes (gloo), on a free port."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), str(Path(__file__).resolve()), str(out)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def config(out: Path) -> FinetuneConfig:
    """6 synthetic videos, every 2nd held out (3 for validation: 2 on process 0, 1 on process 1), 2 steps."""
    cfg = FinetuneConfig()
    cfg.model = dataclasses.replace(cfg.model, decoder_dim=16)
    cfg.data = dataclasses.replace(cfg.data, sources=["synthetic:6"], holdout_every=2, clips_per_video=2,
                                   clip=SupervisedClipConfig(size=(48, 64), max_objects=2))
    cfg.eval = EvalConfig(every=1, max_side=MAX_SIDE)
    cfg.train = dataclasses.replace(cfg.train, max_steps=2, batch_size=1, output_dir=str(out), save_every=0,
                                    tracking_uri=f"sqlite:///{out / 'mlflow.db'}", cpu_threads=1)
    return cfg


def main(out: Path) -> None:
    scored, evaluations, saves, trackers = [], [], [], []
    score_video, run, save_best = validation.score_video, EvalCallback.run, EvalCallback._save_best

    def spy_score(segmenter, video, task, multi_object):
        scored.append(video.name)
        return score_video(segmenter, video, task, multi_object)

    def spy_run(self, trainer):
        trackers.append(trainer.tracker.enabled)
        metrics = run(self, trainer)
        evaluations.append([trainer.state.step, metrics])
        return metrics

    def spy_save(self, *args, **kwargs):
        saves.append(1)
        return save_best(self, *args, **kwargs)

    validation.score_video = spy_score
    EvalCallback.run, EvalCallback._save_best = spy_run, spy_save
    cfg = config(out)
    recipe.run_finetune(cfg)
    scored_while_training = list(scored)

    from accelerate import PartialState

    state = PartialState()
    _, held = recipe.open_videos(cfg)
    best = selfvos.from_pretrained(out / "best")
    task = "one-shot"
    sharded = validation.segmentation_scores(best, held, task, max_side=MAX_SIDE, accelerator=state)
    alone = validation.segmentation_scores(best, held, task, max_side=MAX_SIDE) if state.is_main_process else None
    record = {
        "rank": state.process_index, "num_processes": state.num_processes, "held": held.names,
        "scored": scored_while_training, "evaluations": evaluations, "saves": len(saves), "tracker": trackers,
        "best_sharded": sharded, "best_alone": alone,
    }
    (out / f"rank{state.process_index}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
