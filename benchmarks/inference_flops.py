"""How many frames per second this CPU can reach at most: FLOPs per frame against its matmul peak.

For zero-shot and one-shot with the default settings on a davis2016-val-dev sequence at 854x480, it counts
the floating-point operations of one steady-state ``Segmenter.step`` (``torch.utils.flop_counter``: the
backbone, the heads and the one-shot window affinity; OpenCV's GrabCut and optical flow are not torch ops
and are not counted, and the zero-shot row without GrabCut shows the time GrabCut takes), times the step,
and measures the matmul peak of the same machine in the same run in the dtype the step computes in
(bfloat16 where the CPU does it natively, else float32). The ceiling ``peak / GFLOP per frame`` is what a
perfect implementation of the same arithmetic would reach: when it is below a speed target, only fewer
operations or a faster number format (bf16, int8) can meet it.

    python benchmarks/inference_flops.py --out benchmarks/results/inference_flops.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Dict

import torch

from selfvos.utils.profiling import matmul_peak_gflops

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "davis2016-val-dev"
TARGET_FPS = {"zero-shot": 4.0, "one-shot": 2.0}  # issue 4, 854x480 on 2 CPU cores


def measure(model, task: str, frames, first_mask, warmup: int, timed: int, **settings) -> Dict[str, float]:
    """GFLOP of one steady-state step (after ``warmup`` frames) and the median seconds of ``timed`` steps."""
    from torch.utils.flop_counter import FlopCounterMode

    from selfvos.inference import Segmenter

    segmenter = Segmenter(model, task, **settings)
    segmenter.step(frames[0], mask=first_mask if task == "one-shot" else None)
    for frame in frames[1:warmup]:
        segmenter.step(frame)
    with FlopCounterMode(display=False) as counter:
        segmenter.step(frames[warmup])
    seconds = []
    for frame in frames[warmup + 1:warmup + 1 + timed]:
        start = time.perf_counter()
        segmenter.step(frame)
        seconds.append(time.perf_counter() - start)
    return {"gflop_per_frame": counter.get_total_flops() / 1e9, "seconds_per_frame": statistics.median(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/mug_davis16_cpu/model")
    parser.add_argument("--sequence", default="blackswan")
    parser.add_argument("--warmup", type=int, default=5, help="steps before the counted one (fills the context)")
    parser.add_argument("--timed", type=int, default=5)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "inference_flops.json"))
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA}: not found (the shared DAVIS data, see ../shared/data/README.md)")

    import selfvos
    from selfvos.data.video import first_frame_mask
    from selfvos.data.sources import open_source
    from selfvos.inference.one_shot import bfloat16_is_native
    from selfvos.inference.zero_shot import ZeroShotConfig

    torch.set_num_threads(2)
    model = selfvos.from_pretrained(args.checkpoint).eval()
    video = open_source(f"davis:{DATA}")[args.sequence]
    frames = [video.frame(t) for t in range(args.warmup + 1 + args.timed)]
    bf16 = bfloat16_is_native(torch.device("cpu"))
    peaks = {"float32": matmul_peak_gflops(repeats=5)}
    if bf16:
        peaks["bfloat16"] = matmul_peak_gflops(repeats=5, dtype=torch.bfloat16)
    peak = peaks["bfloat16" if bf16 else "float32"]
    results: Dict[str, Any] = {}
    variants = {"zero-shot": ("zero-shot", {}),  # the time GrabCut takes is the difference of the first two rows
                "zero-shot without GrabCut": ("zero-shot", {"zero_shot": ZeroShotConfig(grabcut_iterations=0)}),
                "one-shot": ("one-shot", {})}
    for name, (task, settings) in variants.items():
        r = measure(model, task, frames, first_frame_mask(video), args.warmup, args.timed, **settings)
        r["frames_per_s"] = 1 / r["seconds_per_frame"]
        r["achieved_gflops"] = r["gflop_per_frame"] / r["seconds_per_frame"]
        r["ceiling_frames_per_s"] = peak / r["gflop_per_frame"]
        r["target_frames_per_s"] = TARGET_FPS[task]
        results[name] = r
    report = {"_about": {"machine": platform.platform(), "processor": _cpu_name(), "threads": 2,
                         "bfloat16_native": bf16, "matmul_peak_gflops": peaks, "checkpoint": args.checkpoint,
                         "sequence": args.sequence, "date": time.strftime("%Y-%m-%d")},
              "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"{_cpu_name()}; bf16 native: {bf16}; matmul peak " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items())
          + " GFLOP/s")
    print(f"\n{'task':<25} {'GFLOP/frame':>12} {'GFLOP/s':>8} {'frames/s':>9} {'ceiling':>8} {'target':>7}")
    for task, r in results.items():
        print(f"{task:<25} {r['gflop_per_frame']:12.1f} {r['achieved_gflops']:8.0f} {r['frames_per_s']:9.2f} "
              f"{r['ceiling_frames_per_s']:8.2f} {r['target_frames_per_s']:7.1f}")
    print(f"wrote {args.out}")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
