"""Pseudo-mask quality on davis2016-train-240p: every 10th frame, mean over the 30 sequences of per-frame J.

Methods (no human labels, no training): ``mr`` (two-stage manifold ranking), ``motion`` (DIS flow minus a
RANSAC affine camera fit), ``fused`` (both + component clean-up + GrabCut). Floors from the brief: quick
manifold ranking 0.22, DIS motion residual 0.48. Writes ``benchmarks/results/pseudo_labels_davis16.json``
and prints a table. Bootstrapping rounds can reuse :func:`evaluate_pseudo_masks` with a store's
``mask_provider(round)`` as ``masks_fn``.

    python benchmarks/pseudo_labels_davis16.py [--methods mr,motion,fused] [--frame-step 10] [--sequences a,b]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "davis2016-train-240p"
OUT = REPO / "benchmarks" / "results" / "pseudo_labels_davis16.json"
FLOORS = {"mr": 0.22, "motion": 0.48}

from selfvos.pseudo.quality import evaluate_pseudo_masks  # noqa: E402  (re-exported for bootstrapping rounds)


def benchmark(methods: List[str], frame_step: int, sequences: List[str]) -> Dict[str, dict]:
    from selfvos.data.sources import open_source
    from selfvos.registry import PSEUDO_LABELERS

    collection = open_source(f"davis:{DATA}").select(sequences or None)
    results = {}
    for method in methods:
        labeler = PSEUDO_LABELERS.create(method)
        start = time.perf_counter()
        scores = evaluate_pseudo_masks(collection, lambda video, index: labeler(collection[video], index),
                                       frame_step=frame_step, progress=True)
        seconds = time.perf_counter() - start
        results[method] = {**scores, "seconds": seconds, "seconds_per_frame": seconds / max(scores["frames"], 1),
                           "config": labeler.config(), "floor": FLOORS.get(method)}
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="mr,motion,fused")
    parser.add_argument("--frame-step", type=int, default=10)
    parser.add_argument("--sequences", default="", help="comma-separated subset (default: all 30)")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found", file=sys.stderr)
        return 0
    import torch

    torch.set_num_threads(2)
    methods = [m for m in args.methods.split(",") if m]
    sequences = [s for s in args.sequences.split(",") if s]
    results = benchmark(methods, args.frame_step, sequences)
    report = {"_about": {"data": str(DATA.relative_to(REPO.parent)), "frame_step": args.frame_step,
                         "metric": "mean over sequences of per-frame J (soft >= 0.5 vs GT > 0)",
                         "machine": platform.platform(), "date": time.strftime("%Y-%m-%d")}, "methods": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"{'method':<8} {'J':>6} {'floor':>6} {'frames':>7} {'s/frame':>8}")
    for method, r in results.items():
        floor = f"{r['floor']:.2f}" if r["floor"] is not None else "-"
        print(f"{method:<8} {r['mean_j']:6.3f} {floor:>6} {r['frames']:7d} {r['seconds_per_frame']:8.3f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
