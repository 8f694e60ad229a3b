"""Scaling on CPU: MuG pretraining steps and round-0 pseudo-labels with 1 process vs 2 processes (DDP, gloo).

    nice -n 19 python benchmarks/scaling.py --out benchmarks/results/scaling.json           # full, idle machine
    nice -n 19 python benchmarks/scaling.py --quick --out /tmp/scaling_quick.json    # smoke run, minutes when idle

1. Pseudo-labels: ``selfvos pseudo-labels`` (round 0, the config's method and frame step) on the config's videos,
   once in 1 process (``--cores`` threads) and once under ``accelerate launch --multi_gpu --num_processes 2``
   (1 thread each). The two rounds must be byte-identical (every mask PNG). Labeling frames/s = masks / (last
   mask's file time - the round's ``created`` stamp, written just before labeling starts); the end-to-end rate
   (whole command, interpreter and launcher start-up included) is reported next to it.
2. Pretraining: ``recipes/mug_pretrain.py`` with the config, ``bootstrap.rounds 1`` and no relabel pass, training
   on the round-0 store of step 1 (so nothing is labeled or relabeled while it runs), once in 1 process
   (``cpu_threads`` = cores, batch = global) and once in 2 processes (``cpu_threads`` = cores / 2, batch =
   global / 2): the same global batch. Step times are the differences of the MLflow timestamps (ms) of the
   ``loss`` metric logged every step (``log_every 1``; the logging is inside every timed step); the first
   ``--skip`` steps are left out. images/s = global batch x clip frames x steps / their seconds (also per
   median step, robust to a step another job disturbed); speedup = images/s (2 processes) / images/s
   (1 process); efficiency = speedup / 2.
3. The fp32 matmul peak (``matmul_peak_gflops``, ``--cores`` threads) before and after the runs.
4. An ESTIMATE for 8 GPUs (nothing of it is measured): t_8 = t_1(batch) + t_allreduce with
   t_allreduce = 2 (N-1)/N x gradient bytes / bus bandwidth, gradient bytes = 4 x trainable parameters
   (fp32, model + objective), t_1(batch) = ``--gpu-step-seconds`` (an assumed time of one step of
   ``train.batch_size`` clips on one GPU), no overlap of the all-reduce with the backward pass (pessimistic).
   Efficiency = t_1 / t_8: the fraction of a perfect 8x over one GPU running the global batch in 8 t_1.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List, Sequence

import torch

from selfvos.atomic import atomic_write_json
from selfvos.errors import SelfvosInputError
from selfvos.utils.profiling import matmul_peak_gflops

ROOT = Path(__file__).resolve().parents[1]
QUICK = {"sequences": "dog-agility,rollerblade", "frame_step": 4, "max_side": 120, "steps": 6, "skip": 2,
         "global_batch": 2, "clip_size": "[64, 96]", "clips_per_video": 4}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(processes: int, threads: int, program: Sequence[str], log: Path) -> float:
    """Run ``program`` (a script and its arguments) in ``processes`` CPU processes of ``threads`` threads each;
    returns its wall seconds. Output goes to ``log``; a failure raises with the log's tail."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": str(threads)}
    env.pop("MLFLOW_TRACKING_URI", None)
    if processes == 1:
        cmd = [sys.executable, *program]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), *program]
    start = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{log.read_text()[-3000:]}")
    return seconds


def step_seconds(db: Path, key: str = "loss") -> Dict[int, float]:
    """step -> seconds since the previous step, from the MLflow sqlite metric timestamps (ms) of ``key``
    (only steps whose previous step was logged too)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT step, MIN(timestamp) FROM metrics WHERE key = ? GROUP BY step ORDER BY step",
                            (key,)).fetchall()
    stamps = {int(step): int(ms) for step, ms in rows}
    return {s: (ms - stamps[s - 1]) / 1000.0 for s, ms in stamps.items() if s - 1 in stamps}


def mask_files(round_dir: Path) -> Dict[str, bytes]:
    """Every mask PNG of a store round: relative path -> bytes."""
    return {str(p.relative_to(round_dir)): p.read_bytes() for p in sorted(round_dir.rglob("*.png"))}


def labeling_rate(round_dir: Path) -> Dict[str, float]:
    """Frames/s of a store round: masks / (last mask written - the round's ``created`` time, 1 s resolution,
    stamped by the main process just before every process starts labeling)."""
    import json
    from datetime import datetime

    created = json.loads((round_dir / "manifest.json").read_text())["created"]
    start = datetime.strptime(created, "%Y-%m-%dT%H:%M:%S%z").timestamp()
    times = [p.stat().st_mtime for p in round_dir.rglob("*.png")]
    if not times or max(times) <= start:
        raise RuntimeError(f"{round_dir}: {len(times)} masks, none written after the round began at {created}")
    seconds = max(times) - start
    return {"frames": len(times), "window_seconds": seconds, "frames_per_s": len(times) / seconds}


def pseudo_labels(cfg, args, processes: int, store: Path, work: Path) -> Dict[str, float]:
    selfvos_bin = shutil.which("selfvos", path=str(Path(sys.executable).parent)) or shutil.which("selfvos")
    program = [selfvos_bin, "pseudo-labels", "--data", cfg.data.source, "--out", str(store),
               "--method", cfg.pseudo.method, "--frame-step", str(args.frame_step), "--max-side", str(args.max_side)]
    if args.sequences:
        program += ["--sequences", args.sequences]
    wall = launch(processes, args.cores // processes, program, work / f"pseudo_{processes}proc.log")
    rate = labeling_rate(store / "round_000")
    return {"processes": processes, "threads_per_process": args.cores // processes, "wall_seconds": wall,
            "end_to_end_frames_per_s": rate["frames"] / wall, **rate}


def pretrain_overrides(args, store: Path) -> List[str]:
    """The dotted overrides every pretraining run shares (one round, no relabel, the given store)."""
    extra = ["--bootstrap.rounds", "1", "--bootstrap.relabel_after_last", "false", "--pseudo.store", str(store),
             "--pseudo.frame_step", str(args.frame_step), "--pseudo.eval_gt", "false",
             "--train.max_steps", str(args.steps), "--train.log_every", "1", "--train.save_every", "0"]
    if args.sequences:
        extra += ["--data.options", "{sequences: [" + args.sequences + "]}"]
    if args.clip_size:
        extra += ["--clip.size", args.clip_size]
    if args.clips_per_video:
        extra += ["--data.clips_per_video", str(args.clips_per_video)]
    return extra


def pretrain(cfg, args, processes: int, store: Path, work: Path) -> Dict[str, float]:
    out = work / f"pretrain_{processes}proc"
    threads = args.cores // processes
    program = [str(ROOT / "recipes" / "mug_pretrain.py"), "--config", args.config, *pretrain_overrides(args, store),
               "--train.batch_size", str(args.global_batch // processes), "--train.cpu_threads", str(threads),
               "--train.output_dir", str(out), "--train.tracking_uri", f"sqlite:///{out / 'mlflow.db'}"]
    wall = launch(processes, threads, program, work / f"pretrain_{processes}proc.log")
    times = step_seconds(out / "mlflow.db")
    steady = [times[s] for s in sorted(times) if s > args.skip]
    if not steady:
        raise RuntimeError(f"{out / 'mlflow.db'}: no step after step {args.skip} was logged")
    per_step = args.global_batch * cfg.clip.num_frames
    median = statistics.median(steady)
    return {"processes": processes, "threads_per_process": threads, "batch_per_process": args.global_batch // processes,
            "timed_steps": len(steady), "step_seconds": steady, "median_step_seconds": median,
            "images_per_s": per_step * len(steady) / sum(steady), "images_per_s_median_step": per_step / median,
            "wall_seconds": wall}


def trainable_parameters(cfg) -> int:
    """Parameters of the MuG model + objective that get gradients (what DDP all-reduces every step)."""
    from selfvos.pretrain import MuGModel, MuGObjective

    model = MuGModel(cfg.model)
    objective = MuGObjective(cfg.objective, feature_channels=model.feature_channels)
    modules = [model, objective] if isinstance(objective, torch.nn.Module) else [model]
    return sum(p.numel() for m in modules for p in m.parameters() if p.requires_grad)


def estimate_8gpu(params: int, cfg, args) -> Dict[str, object]:
    gpus, grad_bytes, t1 = 8, 4 * params, args.gpu_step_seconds
    rows = {}
    for bus, gbps in (("nvlink", args.nvlink_gbps), ("pcie4", args.pcie_gbps)):
        allreduce = 2 * (gpus - 1) / gpus * grad_bytes / (gbps * 1e9)
        t8 = t1 + allreduce
        rows[bus] = {"bus_GB_per_s_assumed": gbps, "allreduce_seconds": allreduce, "step_seconds": t8,
                     "efficiency": t1 / t8, "images_per_s": gpus * cfg.train.batch_size * cfg.clip.num_frames / t8}
    return {"label": "estimate (not measured)", "gpus": gpus, "trainable_parameters": params,
            "gradient_bytes": grad_bytes, "gpu_step_seconds_assumed": t1, "batch_per_gpu": cfg.train.batch_size,
            "formula": "t_8 = t_1(batch per GPU) + 2 (N-1)/N x gradient bytes / bus bandwidth; no overlap",
            "buses": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="recipes/configs/mug_davis16_cpu.yaml")
    parser.add_argument("--quick", action="store_true", help="smoke settings: 2 short videos, 6 steps, small clips")
    parser.add_argument("--cores", type=int, default=2, help="threads of the 1-process runs (2 processes: half each)")
    parser.add_argument("--steps", type=int, default=30, help="pretraining steps per run")
    parser.add_argument("--skip", type=int, default=3, help="first steps left out of the timing")
    parser.add_argument("--global-batch", type=int, default=None, help="clips per step (default: train.batch_size)")
    parser.add_argument("--frame-step", type=int, default=None, help="label every N-th frame (default: the config's)")
    parser.add_argument("--max-side", type=int, default=0, help="pseudo-labeler working size (0 = native)")
    parser.add_argument("--sequences", default=None, help="comma-separated videos (default: all)")
    parser.add_argument("--clip-size", default=None, help="override clip.size, e.g. '[64, 96]'")
    parser.add_argument("--clips-per-video", type=int, default=None)
    parser.add_argument("--gpu-step-seconds", type=float, default=0.05,
                        help="ASSUMED seconds of one step of train.batch_size clips on one GPU (estimate only)")
    parser.add_argument("--nvlink-gbps", type=float, default=150.0, help="assumed NVLink all-reduce GB/s")
    parser.add_argument("--pcie-gbps", type=float, default=25.0, help="assumed PCIe 4 all-reduce GB/s")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep the runs here (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scaling.json"))
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) in (None, parser.get_default(key)):
                setattr(args, key, value)
    from selfvos.cli.pretrain import resolve_config

    if args.cores < 2 or args.cores % 2:
        raise SelfvosInputError("--cores", f"must be an even number >= 2, got {args.cores}")
    cfg = resolve_config(SimpleNamespace(config=args.config, data=None, output_dir=None),
                         ["--clip.size", args.clip_size] if args.clip_size else [])
    if {k for k in cfg.data.options if k != "sequences"}:
        raise SelfvosInputError(args.config, f"data.options {cfg.data.options}: the pseudo-labels CLI takes none")
    args.global_batch = args.global_batch or cfg.train.batch_size
    args.frame_step = args.frame_step or cfg.pseudo.frame_step
    if args.global_batch % 2:
        raise SelfvosInputError("--global-batch", f"must be even (split over 2 processes), got {args.global_batch}")
    if not 0 <= args.skip < args.steps - 1:
        raise SelfvosInputError("--skip", f"must leave at least 2 timed steps of --steps {args.steps}")
    torch.set_num_threads(args.cores)

    peak_before = matmul_peak_gflops()
    work = Path(tempfile.mkdtemp(prefix="scaling_")) if args.work_dir is None else args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    try:
        labels = [pseudo_labels(cfg, args, n, work / f"store_{n}proc", work) for n in (1, 2)]
        if mask_files(work / "store_1proc" / "round_000") != mask_files(work / "store_2proc" / "round_000"):
            raise RuntimeError("2-process pseudo-labels differ from 1-process ones: the timing is void")
        train = [pretrain(cfg, args, n, work / "store_1proc", work) for n in (1, 2)]
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    peak_after = matmul_peak_gflops()
    label_speedup = labels[1]["frames_per_s"] / labels[0]["frames_per_s"]
    train_speedup = train[1]["images_per_s"] / train[0]["images_per_s"]
    median_speedup = train[1]["images_per_s_median_step"] / train[0]["images_per_s_median_step"]
    estimate = estimate_8gpu(trainable_parameters(cfg), cfg, args)

    print(f"{args.config}: global batch {args.global_batch} x {cfg.clip.num_frames} frames @ {list(cfg.clip.size)}, "
          f"{len(train[0]['step_seconds'])} timed steps; "
          f"fp32 matmul peak {peak_before:.0f} -> {peak_after:.0f} GFLOP/s")
    print(f"{'stage':<14}{'procs x thr':>12}{'rate':>10}{'unit':>10}{'speedup':>9}{'effic.':>8}")
    for name, rows, key, unit, speedup in (("pseudo-labels", labels, "frames_per_s", "frames/s", label_speedup),
                                           ("pretraining", train, "images_per_s", "images/s", train_speedup)):
        for r in rows:
            extra = f"{speedup:>8.2f}x{speedup / 2:>8.2f}" if r["processes"] == 2 else ""
            print(f"{name:<14}{r['processes']:>6} x {r['threads_per_process']:<3}{r[key]:>10.2f}{unit:>10}{extra}")
    print(f"pretraining per median step: {train[0]['images_per_s_median_step']:.2f} -> "
          f"{train[1]['images_per_s_median_step']:.2f} images/s, speedup {median_speedup:.2f}x")
    print(f"ESTIMATE, not measured: 8 GPUs, {estimate['trainable_parameters'] / 1e6:.1f}M parameters, assumed "
          f"t_1 = {args.gpu_step_seconds} s per step of {cfg.train.batch_size} clips per GPU")
    for bus, row in estimate["buses"].items():
        print(f"  {bus:<7} {row['bus_GB_per_s_assumed']:>5.0f} GB/s (assumed): "
              f"all-reduce {row['allreduce_seconds']:.4f} s, t_8 {row['step_seconds']:.4f} s, "
              f"efficiency {row['efficiency']:.3f}, {row['images_per_s']:.0f} images/s (estimate)")
    report = {"setting": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
              "matmul_peak_gflops": {"before": peak_before, "after": peak_after},
              "pseudo_labels": {"runs": labels, "speedup": label_speedup, "efficiency": label_speedup / 2,
                                "byte_identical": True},
              "pretraining": {"runs": train, "speedup": train_speedup, "efficiency": train_speedup / 2,
                              "speedup_median_step": median_speedup},
              "estimate_8gpu": estimate}
    atomic_write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except SelfvosInputError as err:  # bad options: one line, exit status 1
        raise SystemExit(f"scaling.py: error: {err}") from None
