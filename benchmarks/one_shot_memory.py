"""Peak memory and speed of one-shot label propagation on long synthetic videos at 854x480.

Memory: each video length runs in its own process, side by side (peak RSS, ``resource.getrusage(...).ru_maxrss``, never
goes down), streaming frames generated on the fly (a textured panorama panned 3 px per frame with a moving
ellipse as the object), so only the propagator's state can grow. The context bank keeps the first frame +
the last ``num_previous`` frames, so a 2,000-frame video must peak within 1.2x of a 100-frame one.

Speed: seconds per frame of ``OneShotPropagator.step`` at 854x480 for each feature source (encode +
windowed affinity), with the fp32 matmul peak measured in the same run (the machine is shared: compare
the two, not absolute numbers across runs).

    python benchmarks/one_shot_memory.py [--lengths 100 2000] [--features lab] [--config lab-floor]
                                         [--speed-frames 8] [--threads 2]
    # any model's one-shot core through selfvos.Segmenter (e.g. a fine-tuned STM), memory runs only:
    python benchmarks/one_shot_memory.py --checkpoint runs/finetune_stm_mug/best --max-side 320 --speed-frames 0 \
        --output benchmarks/results/stm_memory.json

Writes ``benchmarks/results/one_shot_memory.json`` and prints a table.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, Tuple

import numpy as np

from selfvos.utils.profiling import matmul_peak_gflops

REPO = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 480, 854


def synthetic_video(length: int, seed: int = 0, size: Tuple[int, int] = (HEIGHT, WIDTH)
                    ) -> Tuple[Iterator[np.ndarray], np.ndarray]:
    """(frames iterator of (H, W, 3) uint8, first mask (H, W) uint8 with ids 1 and 2); ``size`` (H, W), the
    default 480x854 (the layout is scaled with it)."""
    rng = np.random.default_rng(seed)
    import cv2

    height, width = size
    sy, sx = height / HEIGHT, width / WIDTH
    pan = max(1, round(3 * sx))
    low = (rng.random((max(1, height // 16), (width + pan * 400) // 16, 3)) * 255).astype(np.uint8)
    panorama = cv2.resize(low, ((width + pan * 400), height), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[:height, :width]

    def mask_at(t: int) -> np.ndarray:
        cx, cy = sx * (300 + 150 * np.sin(t / 40.0)), sy * (240 + 80 * np.cos(t / 55.0))
        mask = np.zeros((height, width), np.uint8)
        mask[((yy - cy) / (90.0 * sy)) ** 2 + ((xx - cx) / (60.0 * sx)) ** 2 <= 1] = 1
        mask[(np.abs(yy - 240 * sy) < 50 * sy) & (np.abs(xx - sx * (650 - 100 * np.sin(t / 30.0))) < 40 * sx)] = 2
        return mask

    def frames() -> Iterator[np.ndarray]:
        for t in range(length):
            offset = (t * pan) % (pan * 400)
            frame = panorama[:, offset:offset + width].copy()
            mask = mask_at(t)
            frame[mask == 1] = (230, 40, 40)
            frame[mask == 2] = (40, 40, 230)
            yield frame

    return frames(), mask_at(0)


def build_propagator(features: str, config: str = "default", dtype: str = "auto"):
    import torch

    from selfvos.inference import OneShotConfig, OneShotPropagator

    model = None
    if features != "lab":
        from selfvos.pretrain import MuGModel

        torch.manual_seed(0)
        model = MuGModel()
    if config == "lab-floor":
        cfg = OneShotConfig.lab_floor()
    elif config == "coarse":  # the same pipeline on a 30 x 54 Lab grid: ~10x cheaper per frame, same state
        cfg = OneShotConfig(features="lab", short_side=240, lab_stride=8, radius=3)
    else:
        cfg = OneShotConfig(features=features, affinity_dtype=dtype, encode_dtype=dtype)
    return OneShotPropagator(model, cfg)


def checkpoint_masks(checkpoint: str, max_side, frames: Iterator[np.ndarray], first_mask: np.ndarray):
    """Id masks of ``selfvos.Segmenter`` with the model of ``checkpoint`` (its own one-shot core)."""
    import selfvos

    segmenter = selfvos.Segmenter(selfvos.from_pretrained(checkpoint), "one-shot", max_side=max_side)
    for index, frame in enumerate(frames):
        yield segmenter.to_ids(segmenter.step(frame, first_mask if index == 0 else None))


def child(length: int, features: str, config: str, checkpoint: str = None, max_side: int = None,
          size: Tuple[int, int] = (HEIGHT, WIDTH)) -> Dict[str, float]:
    """Run one video of ``size`` (H, W) in this process; report peak RSS and timing."""
    frames, first_mask = synthetic_video(length, size=size)
    if checkpoint:
        propagator, masks = None, checkpoint_masks(checkpoint, max_side, frames, first_mask)
    else:
        propagator = build_propagator(features, config)
        masks = propagator.propagate(frames, first_mask)
    rss_after = {}
    start = time.perf_counter()
    for index, ids in enumerate(masks):
        if index + 1 in (10, 50, 100, 500, 1000, 2000, 5000, 10000):
            rss_after[str(index + 1)] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"{length}-frame run: peak RSS {rss_after[str(index + 1)]:.0f} MiB after {index + 1} frames",
                  file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if checkpoint:
        return {"frames": length, "features": f"checkpoint {checkpoint}", "config": f"max_side {max_side}",
                "peak_rss_mib": peak, "peak_rss_mib_after": rss_after, "seconds_per_frame": seconds / length,
                "bank_frames": 0, "bank_capacity": 0}
    return {"frames": length, "features": propagator.cfg.features, "config": config, "peak_rss_mib": peak,
            "peak_rss_mib_after": rss_after, "seconds_per_frame": seconds / length,
            "bank_frames": len(propagator.bank), "bank_capacity": propagator.bank.capacity}


def speed(spec: str, frames: int) -> Dict[str, float]:
    """Median seconds per frame of step() at 854x480 with a full context bank, and the encode share.
    ``spec``: a feature source, optionally with the encode + affinity dtype: ``model`` (auto), ``model:float32``."""
    import torch

    features, _, dtype = spec.partition(":")
    propagator = build_propagator(features, dtype=dtype or "auto")
    warmup = propagator.cfg.num_previous  # fill the context bank: timed steps see the full context
    video, first_mask = synthetic_video(1 + warmup + frames, seed=1)
    propagator.step(next(video), first_mask)
    for _ in range(warmup):
        propagator.step(next(video))
    step_times, encode_times = [], []
    for frame in video:
        start = time.perf_counter()
        with torch.no_grad():
            propagator.embed(propagator._prepare(frame))
        encode_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        propagator.step(frame)
        step_times.append(time.perf_counter() - start)
    step, encode = float(np.median(step_times)), float(np.median(encode_times))
    return {"features": spec, "seconds_per_frame": step, "frames_per_second": 1.0 / step,
            "encode_seconds": encode, "propagation_seconds": step - encode,
            "context_frames": 1 + propagator.cfg.num_previous}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="*", default=[100, 2000], help="video lengths (none: skip)")
    parser.add_argument("--features", default="lab", choices=["model", "lab", "both"],
                        help="source for the memory runs")
    parser.add_argument("--config", default="default", choices=["default", "lab-floor", "coarse"],
                        help="memory runs: OneShotConfig(features=...), .lab_floor(), or a coarse Lab grid")
    parser.add_argument("--speed-frames", type=int, default=8, help="frames timed per feature source (0: skip)")
    parser.add_argument("--speed-features", nargs="+", default=["model", "model:float32", "lab", "both"])
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads (1 is faster on an oversubscribed machine)")
    parser.add_argument("--checkpoint", help="memory runs with this model's one-shot core (selfvos.Segmenter)")
    parser.add_argument("--max-side", type=int, help="with --checkpoint: the longest side frames are processed at")
    parser.add_argument("--sequential", action="store_true",
                        help="one length after the other (default side by side; peak RSS is per process either way)")
    parser.add_argument("--size", type=int, nargs=2, default=[HEIGHT, WIDTH], metavar=("H", "W"),
                        help="frame size of the memory runs (smaller: long videos in minutes; the state per frame "
                             "scales with it, its growth with length does not)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "one_shot_memory.json"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args.child, args.features, args.config, args.checkpoint, args.max_side,
                               tuple(args.size))))
        return 0
    # one process per length, run side by side (peak RSS is per process; their timings share the CPU)
    model = ["--checkpoint", args.checkpoint] + (["--max-side", str(args.max_side)] if args.max_side else []) \
        if args.checkpoint else []
    def start(n: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, __file__, "--child", str(n), "--features", args.features,
                                 "--config", args.config, "--threads", str(args.threads), *model,
                                 "--size", *map(str, args.size)],
                                stdout=subprocess.PIPE, text=True, cwd=REPO)

    def finish(run: subprocess.Popen) -> Dict[str, float]:
        out, _ = run.communicate()
        if run.returncode:
            raise SystemExit(f"memory run failed with exit code {run.returncode}")
        return json.loads(out.strip().splitlines()[-1])

    if args.sequential:
        memory = [finish(start(n)) for n in args.lengths]
    else:
        memory = [finish(run) for run in [start(n) for n in args.lengths]]
    ratio = memory[-1]["peak_rss_mib"] / memory[0]["peak_rss_mib"] if memory else None
    after = memory[-1]["peak_rss_mib_after"] if memory else {}
    # within the longest run: peak RSS after its last checkpoint against after 100 frames (same process)
    within = after[max(after, key=int)] / after["100"] if "100" in after else None
    timings = [speed(f, args.speed_frames) for f in args.speed_features] if args.speed_frames else []
    doc = {"size": list(args.size), "memory": memory, "peak_rss_ratio_longest_to_shortest": ratio,
           "peak_rss_ratio_within_longest_run": within,
           "speed": timings, "matmul_peak_gflops": matmul_peak_gflops() if timings else None,
           "checkpoint": args.checkpoint, "max_side": args.max_side,
           "machine": platform.platform(), "torch_threads": args.threads}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(doc, indent=2))
    print(f"{'frames':>7} {'features':>8} {'peak RSS MiB':>13} {'s/frame':>8} {'bank':>6}")
    for m in memory:
        print(f"{m['frames']:>7} {m['features']:>8} {m['peak_rss_mib']:>13.0f} {m['seconds_per_frame']:>8.3f} "
              f"{m['bank_frames']:>3}/{m['bank_capacity']:<3}")
    if memory:
        print(f"peak RSS ratio {memory[-1]['frames']} / {memory[0]['frames']} frames: {ratio:.3f} (must be <= 1.2)")
    if within:
        print(f"peak RSS after {max(after, key=int)} / after 100 frames of the {memory[-1]['frames']}-frame run: "
              f"{within:.3f}")
    for s in timings:
        print(f"speed {s['features']:>14}: {s['seconds_per_frame']:.3f} s/frame ({s['frames_per_second']:.2f} fps), "
              f"encode {s['encode_seconds']:.3f} s, propagation {s['propagation_seconds']:.3f} s")
    if timings:
        print(f"fp32 matmul peak in this run: {doc['matmul_peak_gflops']:.0f} GFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
