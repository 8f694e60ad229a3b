"""Ablation of the MuG granularities: short pretraining runs on DAVIS-2016 train that differ only in one
switched-off objective, each scored zero-shot and one-shot on davis2016-val-dev (854x480).

    python benchmarks/granularity_ablation.py --store runs/mug_davis16_cpu/pseudo_labels --steps 400

Every run starts from ``recipes/configs/mug_davis16_cpu.yaml`` and changes only: ``train.max_steps`` =
``--steps``, one bootstrapping round without a relabel pass (``bootstrap.rounds 1``,
``bootstrap.relabel_after_last false``: these runs measure what each objective adds to the backbone, not the
relabeling, which ``davis16.py --no-bootstrap-checkpoint`` ablates), the same seed, and the round-0 pseudo-masks
read from ``--store`` (the fused masks of a finished ``mug_davis16_cpu`` run; only read, never written) so
that every variant trains on identical labels. Variants: all four objectives, and without frame / tracking /
matching / memory. Scored per variant (official protocol, ``selfvos.eval``): zero-shot with the default
``ZeroShotConfig`` (frame head + motion cue + guarded GrabCut + EMA), the frame head alone (what the
objectives themselves learned for zero-shot), and one-shot label propagation on the model features.
Writes ``benchmarks/results/granularity_ablation.json`` (every row records ``weights_sha256``, the SHA-256 of the
model.safetensors it was measured on) and prints a table.
"""
from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

from selfvos.eval.runner import EARLY_ONE_SHOT, print_columns, run_variant, wanted, weights_sha256

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "recipes" / "configs" / "mug_davis16_cpu.yaml"
DATA = REPO.parent / "shared" / "data" / "davis2016-val-dev"
OUT = REPO / "benchmarks" / "results" / "granularity_ablation.json"
VARIANTS = {"all four": None, "without frame": "frame", "without tracking": "tracking",
            "without matching": "matching", "without memory": "memory"}


def pretrain_variant(term: str | None, steps: int, store: Path, out: Path) -> Path:
    """Train one variant (resumes if its folder holds a partial run); returns the exported model folder."""
    from selfvos.config import apply_overrides, load_yaml
    from selfvos.pretrain.recipe import PretrainConfig, run_pretraining

    overrides: Dict[str, Any] = {
        "train.max_steps": steps, "train.save_every": max(1, steps // 2), "train.output_dir": str(out),
        "bootstrap.rounds": 1, "bootstrap.relabel_after_last": False, "pseudo.store": str(store),
    }
    if term is not None:
        overrides[f"objective.{term}"] = False
    return run_pretraining(apply_overrides(load_yaml(PretrainConfig, CONFIG), overrides))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default=str(REPO / "runs" / "mug_davis16_cpu" / "pseudo_labels"),
                        help="pseudo-label store whose round 0 every variant trains on (read only)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--runs", default=str(REPO / "runs" / "granularity_ablation"))
    parser.add_argument("--only", default="", help="comma-separated subset of variant names (substring match)")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    store = Path(args.store)
    if not DATA.is_dir() or not (store / "round_000").is_dir():
        print(f"skipped: needs {DATA} and a finished round 0 in {store}", file=sys.stderr)
        return 0
    import torch

    import selfvos
    from selfvos.atomic import atomic_write_json
    from selfvos.data.sources import open_source
    from selfvos.inference.one_shot import OneShotConfig
    from selfvos.inference.zero_shot import ZeroShotConfig

    collection = open_source(f"davis:{DATA}")
    zs = ZeroShotConfig()
    tasks = {"zero-shot": ("zero-shot", {"zero_shot": zs}),
             "zero-shot frame head alone": ("zero-shot", {"zero_shot": dataclasses.replace(
                 zs, num_references=0, motion_weight=0.0, grabcut_iterations=0)}),
             "one-shot": ("one-shot", {"one_shot": OneShotConfig(**EARLY_ONE_SHOT)})}  # the table's settings
    results: Dict[str, Dict[str, Any]] = {}
    for name, term in VARIANTS.items():
        if not wanted(name, args.only):
            continue
        run_dir = Path(args.runs) / name.replace(" ", "_")
        reused = (run_dir / "model").is_dir()  # a finished run is only re-scored (e.g. after inference changes)
        start = time.perf_counter()
        folder = pretrain_variant(term, args.steps, store, run_dir)
        train_s = None if reused else time.perf_counter() - start
        torch.set_num_threads(2)  # the trainer may have changed it
        model = selfvos.from_pretrained(folder).eval()
        row: Dict[str, Any] = {"checkpoint": str(folder), "weights_sha256": weights_sha256(folder),
                               "train_seconds": train_s, "reused_finished_run": reused}
        with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
            for task_name, (task, settings) in tasks.items():
                scores = run_variant(model, collection, task, Path(tmp) / task_name.replace(" ", "_"),
                                     gt_dir=DATA / "Annotations" / "480p", **settings)
                row[task_name] = {k: scores[k] for k in ("J&F", "J", "F", "per_sequence_JF")}
        results[name] = row
        print(f"{name:<18} " + "  ".join(f"{t} {row[t]['J&F']:5.1f}" for t in tasks), flush=True)
    report = {"_about": {"data": "davis2016-val-dev (4 sequences, 854x480), official protocol",
                         "steps": args.steps, "store": str(store), "config": str(CONFIG.relative_to(REPO)),
                         "machine": platform.platform(), "date": time.strftime("%Y-%m-%d")},
              "results": results}
    atomic_write_json(args.out, report, sort_keys=False)
    print_columns(results, tasks, "variant")
    print(f"J&F on davis2016-val-dev after {args.steps} pretraining steps per variant\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
