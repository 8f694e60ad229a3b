"""Label-free zero-shot accuracy of pretrained models, side by side on DAVIS-2016 train and davis2016-val-dev.

    python benchmarks/label_free_davis16.py --model "MuG default=runs/mug_davis16_cpu/model" \\
        --model "MuG + flow explanation=runs/mug_davis16_flow_cpu/model"

For each ``--model NAME=CHECKPOINT`` (an exported model, or a ``step_XXXXXXX`` training checkpoint of a run of
``--config``; no human label is used to train any of them) and each split it scores:
- ``zero-shot``: the default ``ZeroShotConfig`` (frame head + motion cue + GrabCut with its IoU guard + EMA);
- ``frame head alone``: no motion cue, no GrabCut, no references, no EMA: what the network itself learned;
- ``IET``: instance embedding transfer (``selfvos.inference.iet``, default ``IETConfig``) on the model's features,
  an offline whole-video method.
Splits: ``train`` = the 30 sequences of davis2016-train-240p (where settings are chosen; zero-shot at most 432 px
wide), ``val-dev`` = the 4 sequences of davis2016-val-dev at 854x480 (a smoke test, never used to choose). The
official protocol scores every frame but the first and the last. Rows accumulate in
``benchmarks/results/label_free_davis16.json`` under ``"<model> | <split> | <variant>"``, each with the SHA-256 of
the weights it was measured on; a rerun replaces its own rows.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

import numpy as np

from selfvos.eval.runner import choose_splits, load_model, print_table, row_weights, run_variant, weights_sha256

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SPLITS = {"train": (SHARED / "davis2016-train-240p", SHARED / "davis2016-train-240p" / "Annotations"),
          "val-dev": (SHARED / "davis2016-val-dev", SHARED / "davis2016-val-dev" / "Annotations" / "480p")}
OUT = REPO / "benchmarks" / "results" / "label_free_davis16.json"
TARGETS = {"zero-shot J&F on val-dev": 65.0, "frame head alone J&F on val-dev": 50.0}


def variants(model: Any) -> Dict[str, tuple]:
    """Variant name -> (task, settings) for ``run_variant``."""
    from selfvos.inference.iet import model_embedder, segment_video
    from selfvos.inference.zero_shot import ZeroShotConfig

    embed = model_embedder(model)

    def iet(video: Any) -> Any:
        return segment_video(np.stack(list(video.iter_frames())), embed)

    return {"zero-shot": ("zero-shot", {"zero_shot": ZeroShotConfig()}),
            "frame head alone": ("zero-shot", {"zero_shot": ZeroShotConfig(
                num_references=0, motion_weight=0.0, grabcut_iterations=0, temporal_momentum=0.0)}),
            "IET": (iet, {})}


def parse_model(spec: str) -> tuple:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise SystemExit(f"--model {spec!r}: expected NAME=CHECKPOINT")
    return name, path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, metavar="NAME=CHECKPOINT",
                        help="a pretrained model to score (repeatable)")
    parser.add_argument("--splits", default="train,val-dev", help="comma-separated: train, val-dev")
    parser.add_argument("--variants", default="zero-shot,frame head alone",
                        help="comma-separated variant names: zero-shot, frame head alone, IET")
    parser.add_argument("--config", default=str(REPO / "recipes" / "configs" / "mug_davis16_cpu.yaml"),
                        help="run config that rebuilds the model of a step_XXXXXXX training checkpoint")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    splits = choose_splits(args.splits, SPLITS)
    if splits is None:
        return 0
    import torch

    from selfvos.atomic import atomic_write_json
    from selfvos.data.sources import open_source

    torch.set_num_threads(2)
    out = Path(args.out)
    command = "python benchmarks/label_free_davis16.py " + " ".join(
        f'"{a}"' if " " in a else a for a in (argv if argv is not None else sys.argv[1:]))
    report = json.loads(out.read_text()) if out.is_file() else {"results": {}}
    for spec in args.model:
        name, checkpoint = parse_model(spec)
        model, digest = load_model(checkpoint, args.config), weights_sha256(checkpoint)
        chosen = {k: v for k, v in variants(model).items() if k in args.variants.split(",")}
        for split in splits:
            data, gt = SPLITS[split]
            collection = open_source(f"davis:{data}")
            for variant, (task, settings) in chosen.items():
                with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
                    scores = run_variant(model, collection, task, Path(tmp) / "pred", gt_dir=gt, **settings)
                key = f"{name} | {split} | {variant}"
                report["results"][key] = {**scores, **row_weights("zero-shot", digest), "checkpoint": checkpoint,
                                          "command": command, "date": time.strftime("%Y-%m-%d")}
                print(f"{key:<60} J&F {scores['J&F']:5.1f}", flush=True)
                report["_about"] = {"splits": {s: str(SPLITS[s][0].name) for s in SPLITS}, "targets": TARGETS,
                                    "machine": platform.platform()}
                atomic_write_json(out, report, sort_keys=False)  # after every row: a stopped run keeps what it measured
    print_table(report["results"], min_width=60)
    print(f"targets: {TARGETS}\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
