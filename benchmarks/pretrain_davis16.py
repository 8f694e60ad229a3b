"""MuG pretraining on davis2016-train-240p: pseudo-mask quality per source and per bootstrapping round, and
whether every enabled loss falls on real video.

    python benchmarks/pretrain_davis16.py --train          # pretrain with recipes/configs/mug_davis16_cpu.yaml first
    python benchmarks/pretrain_davis16.py                  # score an existing run (runs/mug_davis16_cpu)
    python benchmarks/pretrain_davis16.py --relabel        # + one more relabel pass by the exported model

Pseudo-mask J: every 10th frame, mean over the 30 sequences of per-frame J (soft >= 0.5 vs GT > 0), computed
here for manifold ranking (``mr``) and ``motion`` alone, and read back from the run's pseudo-label store for
round 0 (the ``fused`` labeler the run trained on) and every relabeled round. The human masks are used only
for scoring. Loss fall: mean of each logged term over the first and the last 20% of logged steps (MLflow).
Writes ``benchmarks/results/pretrain_davis16.json`` and prints a table.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Dict

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "recipes" / "configs" / "mug_davis16_cpu.yaml"
OUT = REPO / "benchmarks" / "results" / "pretrain_davis16.json"
TERMS = ("loss", "frame", "tracking", "matching", "memory")


def loss_fall(tracking_uri: str, experiment: str) -> Dict[str, dict]:
    """First-20% vs last-20% mean of every logged loss term in the run's newest MLflow run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    out = {}
    for term in TERMS:
        history = sorted(client.get_metric_history(runs[0].info.run_id, term), key=lambda m: m.step)
        values = [m.value for m in history]
        if len(values) < 5 or max(abs(v) for v in values) == 0.0:
            continue  # disabled term (logged as 0) or too short a run
        k = max(1, len(values) // 5)
        first, last = sum(values[:k]) / k, sum(values[-k:]) / k
        out[term] = {"first": first, "last": last, "fell": last < first, "logged_steps": len(values)}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--train", action="store_true", help="run the pretraining first (resumes if interrupted)")
    parser.add_argument("--relabel", action="store_true",
                        help="relabel every video with the exported model into the next store round (the same "
                             "ModelRelabeler + generate_pseudo_labels the training callback runs after each round)")
    parser.add_argument("--frame-step", type=int, default=10)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)

    from selfvos.config import load_yaml
    from selfvos.data.sources import open_source
    from selfvos.engine.config import resolve_tracking_uri
    from selfvos.pretrain.recipe import PretrainConfig, run_pretraining
    from selfvos.pseudo import PseudoLabelStore, evaluate_pseudo_masks
    from selfvos.registry import PSEUDO_LABELERS

    cfg = load_yaml(PretrainConfig, args.config)
    data = cfg.data.source.split(":", 1)[-1]
    if not Path(data).is_dir():
        print(f"skipped: {data} not found (run from the repository root with ../shared/data present)", file=sys.stderr)
        return 0
    train_seconds = None
    if args.train:
        start = time.perf_counter()
        run_pretraining(cfg)
        train_seconds = time.perf_counter() - start
    collection = open_source(cfg.data.source, **cfg.data.options)
    store = PseudoLabelStore(cfg.store_dir)
    if not store.rounds():
        print(f"no pseudo-label rounds in {cfg.store_dir}: run with --train first", file=sys.stderr)
        return 1

    if args.relabel:
        import torch

        import selfvos
        from selfvos.pretrain.bootstrap import ModelRelabeler
        from selfvos.pretrain.relabel import RoundMaskProvider
        from selfvos.pseudo import generate_pseudo_labels

        last = store.latest_round()
        model = selfvos.from_pretrained(Path(cfg.train.output_dir) / "model").eval()
        relabeler = ModelRelabeler(model, cfg.clip.size, cfg.bootstrap, previous=RoundMaskProvider(store, last),
                                   round_index=last)
        with torch.inference_mode():
            generate_pseudo_labels(collection, store, last + 1, relabeler, frame_step=cfg.pseudo.frame_step,
                                   eval_gt=False)
    rows = {}
    for method in ("mr", "motion"):
        labeler = PSEUDO_LABELERS.create(method)
        scores = evaluate_pseudo_masks(collection, lambda v, i: labeler(collection[v], i), frame_step=args.frame_step)
        rows[method] = scores["mean_j"]
    for r in store.rounds():
        manifest = store.manifest(r)
        if not manifest.get("complete"):
            continue
        name = f"round {r} ({manifest['labeler'].get('type', '?')})"
        scores = evaluate_pseudo_masks(collection, store.mask_provider(r), frame_step=args.frame_step)
        rows[name] = scores["mean_j"]
    initial = max(rows["mr"], rows["motion"], rows.get("round 0 (fused)", 0.0))
    final = rows[list(rows)[-1]]
    losses = loss_fall(resolve_tracking_uri(cfg.train.tracking_uri, cfg.train.output_dir), cfg.train.experiment)
    report = {
        "_about": {"config": str(Path(args.config).relative_to(REPO)) if Path(args.config).is_absolute() else args.config,
                   "metric": f"pseudo-mask J, every {args.frame_step}th frame, mean over sequences",
                   "machine": platform.platform(), "date": time.strftime("%Y-%m-%d"), "train_seconds": train_seconds},
        "pseudo_mask_J": rows,
        "best_initial_J": initial,
        "final_J": final,
        "bootstrapping_beats_best_initial": final > initial,
        "loss_fall": losses,
        "all_enabled_losses_fall": all(v["fell"] for v in losses.values()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"{'pseudo-masks':<22} {'J':>6}")
    for name, j in rows.items():
        print(f"{name:<22} {j:6.3f}")
    print(f"\n{'loss term':<10} {'first 20%':>10} {'last 20%':>10} {'fell':>5}")
    for term, v in losses.items():
        print(f"{term:<10} {v['first']:10.4f} {v['last']:10.4f} {str(v['fell']):>5}")
    print(f"\nbootstrapped {final:.3f} vs best initial {initial:.3f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
