"""Seconds to render one synthetic video (the built-in default dataset), against the target of < 2 s for 64
frames at 256x256 with 3 objects on 2 CPU cores.

    python benchmarks/synthetic_speed.py --repeats 5 --out benchmarks/results/synthetic_speed.json

Renders ``make_video(seed, cfg)`` for ``--repeats`` seeds at each size and reports the best and the median
wall clock (the best is the figure least disturbed by other jobs on a shared CPU). Writes the JSON and
prints a table.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "synthetic_speed.json"
TARGET_S = 2.0  # 64 frames at 256x256, 3 objects


def measure(frames: int, size: int, objects: int, repeats: int) -> Dict[str, Any]:
    """Best and median seconds of ``make_video`` over ``repeats`` seeds."""
    from selfvos.data.synthetic import SyntheticConfig, make_video

    cfg = SyntheticConfig(num_frames=frames, height=size, width=size, min_objects=objects, max_objects=objects)
    seconds: List[float] = []
    for seed in range(repeats):
        start = time.perf_counter()
        make_video(seed, cfg)
        seconds.append(time.perf_counter() - start)
    return {"frames": frames, "size": size, "objects": objects, "best_s": min(seconds),
            "median_s": statistics.median(seconds), "all_s": seconds,
            "frames_per_s": frames / min(seconds)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--objects", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)

    from selfvos.atomic import atomic_write_json

    rows = {f"{args.frames} frames at {s}x{s}, {args.objects} objects": measure(args.frames, s, args.objects,
                                                                               args.repeats)
            for s in args.sizes}
    report = {"_about": {"target_s": {"64 frames at 256x256, 3 objects": TARGET_S}, "machine": platform.platform(),
                         "processor": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d")},
              "results": rows}
    atomic_write_json(args.out, report, sort_keys=False, newline=True)
    width = max(map(len, rows))
    print(f"\n{'video':<{width}} {'best s':>7} {'median s':>9} {'frames/s':>9}")
    for name, r in rows.items():
        print(f"{name:<{width}} {r['best_s']:7.3f} {r['median_s']:9.3f} {r['frames_per_s']:9.1f}")
    print(f"target: < {TARGET_S:.0f} s for 64 frames at 256x256 with 3 objects\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
