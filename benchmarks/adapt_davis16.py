"""Label-free adaptation to one video at a time: zero-shot and one-shot J&F of the adapted model against its parent.

    python benchmarks/adapt_davis16.py --splits train --minutes 2,5,10     # choose the budget on DAVIS-2016 train
    python benchmarks/adapt_davis16.py --splits val-dev --minutes N        # then measure it on davis2016-val-dev

For each sequence of each split, ``selfvos adapt`` (a subprocess, timed: the command a user runs) adapts
``--checkpoint`` (default ``runs/mug_davis16_cpu/model``) for ``--minutes`` on that sequence's own frames: the
data is a ``frames:`` source on its JPEG folder, so the adaptation never sees a mask. The adapted model and the
parent then segment the sequence with the default zero-shot (``ZeroShotConfig()``: frame head + motion cue +
guarded GrabCut + EMA) and one-shot (``OneShotConfig()``: label propagation on the model features, the
first-frame annotation as the only label) settings, scored with the official-parity evaluator
(``selfvos.eval.runner.run_variant``, every frame but the first and the last). Splits: ``train`` = the 30
sequences of davis2016-train-240p (where the budget is chosen), ``val-dev`` = the 4 sequences of
davis2016-val-dev at 854x480 (never used to choose anything). ``--sequences`` restricts a split's sequences.

Rows accumulate in ``benchmarks/results/adapt_davis16.json`` under ``"<split> | <sequence> | <model> | <task>"``
(``<model>`` = ``parent`` or ``adapted <minutes> min``) with the SHA-256 of the weights each was measured on, the
command and the date, plus the adaptation's wall time, steps and frame step; ``"<split> | mean of N | ..."`` rows
hold the means over the sequences of this run and the gain. A rerun replaces its own rows. The adapted
checkpoints stay under ``--work`` (default ``runs/adapt_davis16``), one run folder per split, budget and sequence.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from selfvos.eval.runner import choose_splits, load_model, row_weights, run_variant, weights_sha256

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
# split -> (DAVIS root, its frame folders, its annotation folder)
SPLITS = {"train": (SHARED / "davis2016-train-240p", Path("JPEGImages"), Path("Annotations")),
          "val-dev": (SHARED / "davis2016-val-dev", Path("JPEGImages/480p"), Path("Annotations/480p"))}
OUT = REPO / "benchmarks" / "results" / "adapt_davis16.json"
TASKS = ("zero-shot", "one-shot")


def task_settings(task: str) -> dict[str, Any]:
    """``run_variant`` settings of the default zero-shot or one-shot segmentation."""
    from selfvos.inference.one_shot import OneShotConfig
    from selfvos.inference.zero_shot import ZeroShotConfig

    return {"zero_shot": ZeroShotConfig()} if task == "zero-shot" else {"one_shot": OneShotConfig()}


def run_adaptation(checkpoint: str, frames: Path, out: Path, minutes: float) -> dict[str, Any]:
    """``selfvos adapt`` on the frame folder ``frames`` into ``out``; returns its wall time and training facts."""
    command = [sys.executable, "-c", "import sys; from selfvos.cli import main; sys.exit(main())", "adapt",
               "--checkpoint", checkpoint, "--data", f"frames:{frames}", "--out", str(out), "--minutes", str(minutes)]
    start = time.monotonic()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.monotonic() - start
    if done.returncode != 0:
        raise SystemExit(f"adaptation of {frames.name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads((out / "model" / "training.json").read_text())["adapt"]
    return {"wall_seconds": round(seconds, 1), "seconds_used": summary["seconds_used"], "steps": summary["steps"],
            "frame_step": summary["frame_step"], "labelled_frames": summary["labelled_frames"]}


def score(model: Any, collection: Any, gt: Path, task: str) -> dict[str, Any]:
    """Zero-shot or one-shot scores of ``model`` on ``collection`` (official protocol)."""
    import torch

    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        return run_variant(model, collection, task, Path(tmp) / "pred", gt_dir=gt, **task_settings(task))


def row(scores: dict[str, Any], task: str, digest: str, checkpoint: str, command: str, **extra: Any) -> dict[str, Any]:
    """One result row: scores, the weights they were measured on, the command and the date."""
    return {**{k: scores[k] for k in ("J&F", "J", "F")}, **row_weights(task, digest), "checkpoint": checkpoint,
            "command": command, "date": time.strftime("%Y-%m-%d"), **extra}


def mean_rows(results: dict[str, Any], split: str, sequences: list[str], label: str, command: str) -> None:
    """``"<split> | mean of N | <model> | <task>"`` rows and the gain of the adapted model over the parent. A mean
    over adapted models (one per sequence) has no single fingerprint: it lists each sequence's instead."""
    for task in TASKS:
        means, digests = {}, {}
        for model in ("parent", label):
            rows = {s: results[f"{split} | {s} | {model} | {task}"] for s in sequences}
            means[model] = sum(r["J&F"] for r in rows.values()) / len(rows)
            digests[model] = {s: r["weights_sha256"] for s, r in rows.items()}
        common = {"sequences": sequences, "command": command, "date": time.strftime("%Y-%m-%d")}
        results[f"{split} | mean of {len(sequences)} | parent | {task}"] = {
            "J&F": means["parent"], "weights_sha256": next(iter(digests["parent"].values())), **common}
        for name, value in ((label, means[label]), (f"gain {label}", means[label] - means["parent"])):
            results[f"{split} | mean of {len(sequences)} | {name} | {task}"] = {
                "J&F": value, "weights_sha256": None, "weights_sha256_by_sequence": digests[label], **common}


def print_gains(results: dict[str, Any], split: str, sequences: list[str], label: str) -> None:
    """Per sequence and on average: parent, adapted and gain in J&F for each task."""
    head = " ".join(f"{t + ' ' + c:>18}" for t in TASKS for c in ("parent", "adapted", "gain"))
    print(f"\n{split}, {label}\n{'sequence':<20} {head}")
    for name in [*sequences, f"mean of {len(sequences)}"]:
        cells = []
        for task in TASKS:
            parent = results[f"{split} | {name} | parent | {task}"]["J&F"]
            adapted = results[f"{split} | {name} | {label} | {task}"]["J&F"]
            cells += [f"{parent:18.1f}", f"{adapted:18.1f}", f"{adapted - parent:+18.1f}"]
        print(f"{name:<20} " + " ".join(cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/mug_davis16_cpu/model", help="the parent model")
    parser.add_argument("--minutes", default="5", help="adaptation budget(s) per sequence, comma-separated")
    parser.add_argument("--splits", default="val-dev", help="comma-separated: train, val-dev")
    parser.add_argument("--sequences", default="", help="comma-separated sequence names (default: all of the split)")
    parser.add_argument("--work", default=str(REPO / "runs" / "adapt_davis16"), help="folder for the adapted runs")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    splits = choose_splits(args.splits, SPLITS)
    if splits is None:
        return 0
    budgets = [float(m) for m in args.minutes.split(",") if m]
    import torch

    from selfvos.atomic import atomic_write_json
    from selfvos.data.sources import open_source

    torch.set_num_threads(2)
    out = Path(args.out)
    command = "python benchmarks/adapt_davis16.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = json.loads(out.read_text()) if out.is_file() else {"results": {}}
    results = report["results"]
    parent, parent_digest = load_model(args.checkpoint), weights_sha256(args.checkpoint)
    for split in splits:
        root, frames_dir, gt_dir = SPLITS[split]
        collection = open_source(f"davis:{root}")
        sequences = [s for s in args.sequences.split(",") if s] or collection.names
        for sequence in sequences:
            video = collection.select([sequence])
            for task in TASKS:
                scores = score(parent, video, root / gt_dir, task)
                key = f"{split} | {sequence} | parent | {task}"
                results[key] = row(scores, task, parent_digest, args.checkpoint, command)
                print(f"{split} | {sequence} | parent | {task}: J&F {scores['J&F']:.1f}", flush=True)
            for minutes in budgets:
                label = f"adapted {minutes:g} min"
                run_dir = Path(args.work) / split / f"{minutes:g}min" / sequence
                facts = run_adaptation(args.checkpoint, root / frames_dir / sequence, run_dir, minutes)
                adapted, digest = load_model(run_dir / "model"), weights_sha256(run_dir / "model")
                for task in TASKS:
                    scores = score(adapted, video, root / gt_dir, task)
                    results[f"{split} | {sequence} | {label} | {task}"] = row(
                        scores, task, digest, str(run_dir / "model"), command, parent_sha256=parent_digest, **facts)
                    print(f"{split} | {sequence} | {label} | {task}: J&F {scores['J&F']:.1f} ({facts})", flush=True)
                report["_about"] = {"splits": {s: str(SPLITS[s][0].name) for s in SPLITS},
                                    "parent": args.checkpoint, "machine": platform.platform()}
                atomic_write_json(out, report, sort_keys=False)  # after every sequence: a stopped run keeps its rows
        for minutes in budgets:
            label = f"adapted {minutes:g} min"
            mean_rows(results, split, sequences, label, command)
            print_gains(results, split, sequences, label)
        atomic_write_json(out, report, sort_keys=False)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
