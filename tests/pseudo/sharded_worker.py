"""Run by the sharded pseudo-label tests: round 0 and one relabel pass over a tiny synthetic collection, in one
process (in the test) or in each of 2 CPU (gloo) processes under ``accelerate launch``.

- round 0: the ``selfvos pseudo-labels`` CLI's ``fused`` labeler on ``synthetic:5`` (5 videos of 32 frames at
  128x128, every 16th frame), through :func:`generate_pseudo_labels` with the accelerator's ``ShardPlan``;
- round 1: :class:`RelabelCallback` with a seeded MuG model, DDP-wrapped when distributed (the callback labels
  with the unwrapped model).

Every round-0 labeler call appends ``<video> <frame>`` to ``OUT/calls/<tag>-rank<r>.txt``. With
``SELFVOS_TEST_FAIL_RANK=r`` rank r raises on the first frame of its second video (its first is marked done).
Usage: ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 sharded_worker.py OUT TAG ROUNDS``
(``ROUNDS``: ``0`` or ``0,1``); the store is ``OUT/store``.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, when run as a script

from selfvos.pseudo.base import PseudoLabeler  # noqa: E402

SPEC, FRAME_STEP, SEED = "synthetic:5", 16, 3
FAIL_ENV = "SELFVOS_TEST_FAIL_RANK"


class CountingLabeler(PseudoLabeler):
    """``inner`` with every call logged to ``log``; raises on the second video when ``fail``."""

    def __init__(self, inner: PseudoLabeler, log: Path, fail: bool = False) -> None:
        self.inner, self.log, self.fail, self.videos = inner, log, fail, []
        self.name = inner.name

    def __call__(self, video, index):
        if video.name not in self.videos:
            if self.fail and self.videos:
                raise RuntimeError(f"simulated crash before {video.name}")
            self.videos.append(video.name)
        with open(self.log, "a") as fh:
            fh.write(f"{video.name} {index}\n")
        return self.inner(video, index)

    def config(self):
        return self.inner.config()


def read_calls(out: Path, tag: str, rank: str = "*") -> List[tuple]:
    """Every logged ``(video, frame)`` call of the run ``tag`` (of rank ``rank``; all ranks by default)."""
    calls = []
    for path in sorted((out / "calls").glob(f"{tag}-rank{rank}.txt")):
        calls += [(v, int(i)) for v, i in (line.split() for line in path.read_text().splitlines())]
    return calls


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(*args: str, env: Dict[str, str] = None, script: str = None) -> subprocess.CompletedProcess:
    """``script`` (default: this worker) with ``args`` in 2 CPU processes under ``accelerate launch``."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", **(env or {})}
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), script or str(Path(__file__).resolve()), *args,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


class _Tracker:
    def log_metrics(self, metrics, step):
        pass

    def log_image(self, image, name):
        pass


class _Step(torch.nn.Module):
    """What the trainer prepares (model + objective); the relabel callback reads ``unwrapped.model``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model


class StubTrainer:
    """The parts of :class:`selfvos.engine.Trainer` that :class:`RelabelCallback` uses."""

    def __init__(self, accelerator, module) -> None:
        self.accelerator, self.module, self.tracker = accelerator, module, _Tracker()

    def check_finite_weights(self, path, action, module=None) -> None:
        assert all(torch.isfinite(p).all() for p in module.parameters()), action


def main(out: Path, tag: str, rounds: List[int]) -> None:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from selfvos.cli.pseudo_labels import build_labeler
    from selfvos.config import apply_overrides
    from selfvos.data.sources import open_source
    from selfvos.pretrain.model import MuGModel
    from selfvos.pretrain.recipe import PretrainConfig
    from selfvos.pretrain.relabel import RelabelCallback, RoundMaskProvider
    from selfvos.pseudo import PseudoLabelStore, generate_pseudo_labels
    from selfvos.pseudo.generate import ShardPlan

    torch.set_num_threads(1)
    acc = Accelerator(cpu=True)
    plan = ShardPlan.from_state(acc)
    collection, store = open_source(SPEC), PseudoLabelStore(out / "store")
    (out / "calls").mkdir(parents=True, exist_ok=True)
    if 0 in rounds:
        fail = os.environ.get(FAIL_ENV) == str(plan.rank)
        labeler = CountingLabeler(build_labeler("fused"), out / "calls" / f"{tag}-rank{plan.rank}.txt", fail)
        generate_pseudo_labels(collection, store, 0, labeler, frame_step=FRAME_STEP, progress=False, shard=plan)
    if 1 in rounds:
        cfg = apply_overrides(PretrainConfig(), {"clip.size": [64, 64], "bootstrap.rounds": 1,
                                                 "pseudo.frame_step": FRAME_STEP, "pseudo.gallery_videos": 2})
        set_seed(SEED)  # the same initial weights on every process, as the recipe
        module = acc.prepare(_Step(MuGModel(cfg.model)))
        relabel = RelabelCallback(cfg, collection, store, RoundMaskProvider(store))
        relabel.on_round_end(StubTrainer(acc, module), 0)
    acc.wait_for_everyone()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], [int(r) for r in sys.argv[3].split(",")])
