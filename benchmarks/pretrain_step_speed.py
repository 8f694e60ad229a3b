"""Seconds per MuG pretraining step on CPU (all four granularities, forward + backward + Adam).

Setting of the target: ResNet-18 at output stride 8, batch 2, T=3 frames of 128 px, R=2 reference crops
of 64 px, 2 threads. The released MuG code takes about 4 s per such step on 2 idle cores (BRIEF 6);
the target is < 1 s (aim < 0.6 s).

The CPU is shared, so the script also measures the fp32 matmul peak in the same run and the FLOPs of
one step (``torch.utils.flop_counter``), and reports the step time rescaled to an idle machine
(``seconds * measured_peak / reference_peak``, reference peak 146 GFLOP/s = the low end of BRIEF 6).
The headline is the best of ``--steps`` steps (least disturbed by other jobs); the median is printed too.

    python benchmarks/pretrain_step_speed.py --steps 5 --out benchmarks/results/pretrain_step_speed.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Dict, List

import torch

from selfvos.utils.profiling import matmul_peak_gflops

REFERENCE_PEAK_GFLOPS = 146.0
REFERENCE_MUG_STEP_S = 4.0


def synthetic_batch(batch: int, frames: int, refs: int, size: int, ref_size: int, seed: int = 0) -> Dict[str, torch.Tensor]:
    """A random batch following the pretraining batch contract."""
    g = torch.Generator().manual_seed(seed)
    return {
        "frames": torch.rand(batch, frames, 3, size, size, generator=g),
        "pseudo_masks": torch.rand(batch, frames, 1, size, size, generator=g),
        "mask_valid": torch.ones(batch, frames, dtype=torch.bool),
        "refs": torch.rand(batch, refs, 3, ref_size, ref_size, generator=g),
        "ref_masks": torch.rand(batch, refs, 1, ref_size, ref_size, generator=g),
        "ref_valid": torch.ones(batch, refs, dtype=torch.bool),
        "video_index": torch.arange(batch),
        "frame_indices": torch.arange(frames).repeat(batch, 1),
        "ref_indices": torch.arange(refs).repeat(batch, 1),
    }


def measure(layer: str, args: argparse.Namespace) -> Dict[str, float]:
    from torch.utils.flop_counter import FlopCounterMode

    from selfvos.backbones import BackboneConfig
    from selfvos.pretrain import MuGConfig, MuGModel, MuGObjective

    torch.manual_seed(0)
    model = MuGModel(MuGConfig(backbone=BackboneConfig(name=args.backbone, output_stride=args.output_stride,
                                                       return_layers=(layer,))))
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    objective = MuGObjective()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    batch = synthetic_batch(args.batch, args.frames, args.refs, args.size, args.ref_size)

    def step() -> None:
        out = objective(model, batch)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()

    with FlopCounterMode(display=False) as counter:
        step()
    gflop = counter.get_total_flops() / 1e9
    times: List[float] = []
    peaks: List[float] = []
    for _ in range(args.steps):
        peaks.append(matmul_peak_gflops())
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    # Shared CPU: other jobs come and go within seconds. Best-of-N is the figure least disturbed by
    # them (timeit's rule); the median and the peak measured next to each step are reported too.
    best = min(range(len(times)), key=times.__getitem__)
    seconds, peak = times[best], peaks[best]
    return {"layer": layer, "channels_last": args.channels_last, "seconds_per_step": seconds,
            "median_seconds": statistics.median(times), "all_seconds": times, "gflop_per_step": gflop,
            "achieved_gflops": gflop / seconds, "matmul_peak_gflops": peak, "max_matmul_peak_gflops": max(peaks),
            "seconds_at_reference_peak": seconds * peak / REFERENCE_PEAK_GFLOPS,
            "speedup_vs_released_mug": REFERENCE_MUG_STEP_S / seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--output-stride", type=int, default=8)
    parser.add_argument("--layers", nargs="+", default=["layer4", "layer3"], help="feature layer(s) of phi")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--refs", type=int, default=2)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--ref-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--channels-last", action="store_true", help="NHWC weights and inputs (oneDNN)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/pretrain_step_speed.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = [measure(layer, args) for layer in args.layers]
    header = (f"{'phi layer':<10}{'best s':>8}{'median s':>10}{'GFLOP':>8}{'GFLOP/s':>9}{'peak':>8}"
              f"{'s@146':>8}{'vs 4 s':>8}")
    print(f"{args.backbone} OS{args.output_stride}, batch {args.batch}, T={args.frames} @ {args.size}px, "
          f"R={args.refs} @ {args.ref_size}px, {args.threads} threads")
    print(header)
    for r in rows:
        print(f"{r['layer']:<10}{r['seconds_per_step']:>8.3f}{r['median_seconds']:>10.3f}{r['gflop_per_step']:>8.1f}"
              f"{r['achieved_gflops']:>9.1f}"
              f"{r['matmul_peak_gflops']:>8.1f}{r['seconds_at_reference_peak']:>8.3f}{r['speedup_vs_released_mug']:>7.1f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"setting": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "torch": torch.__version__, "machine": platform.processor() or platform.machine(), "results": rows}
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
