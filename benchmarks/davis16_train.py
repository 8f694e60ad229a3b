"""Zero-shot and one-shot settings on DAVIS-2016 *train*: where the inference defaults were chosen. The human
masks of train are used only to choose settings, never to train.

    python benchmarks/davis16_train.py --checkpoint runs/mug_davis16_cpu/model --task zero-shot
    python benchmarks/davis16_train.py --checkpoint runs/mug_davis16_cpu/model --task one-shot
    python benchmarks/davis16_train.py --checkpoint runs/mug_davis16_cpu/checkpoints/step_0000800 --task zero-shot

zero-shot (all 30 sequences by default): the default ``ZeroShotConfig``; with the propagated prior of the
previous outputs (weight 0.25; better here, worse on val-dev, so not the default); the constants before the
train-set choice (co-attention references at weight 0.5, EMA 0.5, no GrabCut IoU guard).
one-shot (every 3rd sequence by default): the default ``OneShotConfig`` (guided-filter refinement r 16,
eps 1e-5), without the refinement (bilinear upsampling), and model features + Lab colour (``features="both"``,
better here than on val-dev: train is 240p upsampled to the 480p working size).
``--vary FIELD=V1,V2`` (repeatable) adds one variant per value of a field of the task's config, all other
fields at their defaults or at the ``--base FIELD=V`` changes (a one-at-a-time sweep:
``--vary topk=5,20 --vary temperature=0.05,0.1 --only =``; ``--only =`` keeps the swept variants only).
Frames are 240p (one-shot encodes them at the default short side 480 like val; zero-shot at most 432 px
wide). Writes ``benchmarks/results/<task>_train.json`` (``zero_shot_train.json``, ``one_shot_train.json``;
every row records ``weights_sha256``, the SHA-256 of the model.safetensors it was measured on) and prints a table.
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

from selfvos.eval.runner import load_model, print_table, row_weights, run_variant, wanted, weights_sha256

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "recipes" / "configs" / "mug_davis16_cpu.yaml"
TRAIN = REPO.parent / "shared" / "data" / "davis2016-train-240p"
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_EVERY = {"zero-shot": 1, "one-shot": 3}


def variants(task: str) -> Dict[str, Dict[str, Any]]:
    """Variant name -> keyword settings of :class:`selfvos.inference.Segmenter` for ``task``."""
    from selfvos.inference.one_shot import OneShotConfig
    from selfvos.inference.zero_shot import ZeroShotConfig

    if task == "one-shot":
        return {"default (flip-averaged features, guided refinement r 16, eps 1e-5)": {"one_shot": OneShotConfig()},
                "without flip averaging": {"one_shot": OneShotConfig(flip_average=False)},
                "without guided refinement": {"one_shot": OneShotConfig(refine_radius=0)},
                "model features + Lab colour (weight 1)": {"one_shot": OneShotConfig(features="both")}}
    return {"default": {"zero_shot": ZeroShotConfig()},
            "with the propagated prior (weight 0.25)": {"zero_shot": ZeroShotConfig(propagation_weight=0.25)},
            "flip-averaged frame head": {"zero_shot": ZeroShotConfig(flip_average=True)},
            "constants before the train-set choice": {"zero_shot": ZeroShotConfig(
                reference_weight=0.5, temporal_momentum=0.5, grabcut_min_iou=0.0)}}


def parse_value(kind: type, text: str) -> Any:
    """One ``--vary`` value: bools from 1/true/yes, tuples of floats from "a+b" ("" = empty), else ``kind(text)``."""
    if kind is bool:
        return text.lower() in ("1", "true", "yes")
    if kind is tuple:
        return tuple(float(x) for x in text.split("+") if x)
    return kind(text)


def parse_settings(config, specs) -> Dict[str, list]:
    """``FIELD=V1,V2`` strings -> {FIELD: [parsed values]} for the fields of dataclass ``config``."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(config)}
    out: Dict[str, list] = {}
    for spec in specs:
        name, _, values = spec.partition("=")
        if name not in fields or not values:
            raise SystemExit(f"{spec!r}: expected FIELD=V1,V2 with FIELD one of {sorted(fields)}")
        kind = type(getattr(config(), name))
        kind = int if kind is type(None) else kind  # Optional[int] fields (tile)
        out[name] = [parse_value(kind, v) for v in values.split(",")]
    return out


def swept_variants(task: str, vary, base=()) -> Dict[str, Dict[str, Any]]:
    """``--vary FIELD=V1,V2`` -> {"[BASE ]FIELD=V": settings}: one field changed at a time from the default
    config with the ``--base FIELD=V`` changes applied."""
    from selfvos.inference.one_shot import OneShotConfig
    from selfvos.inference.zero_shot import ZeroShotConfig

    config, key = (OneShotConfig, "one_shot") if task == "one-shot" else (ZeroShotConfig, "zero_shot")
    fixed = {name: values[0] for name, values in parse_settings(config, base).items()}
    prefix = "".join(f"{name}={value} " for name, value in fixed.items())
    return {f"{prefix}{name}={value}": {key: config(**{**fixed, name: value})}
            for name, values in parse_settings(config, vary).items() for value in values}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="exported model folder or Hub id (selfvos.from_pretrained), "
                        "or a step_XXXXXXX training checkpoint of a run of --config")
    parser.add_argument("--config", default=str(CONFIG), help="the run config of a training checkpoint")
    parser.add_argument("--task", choices=sorted(DEFAULT_EVERY), required=True)
    parser.add_argument("--every", type=int, help="take every n-th training sequence (zero-shot 1, one-shot 3)")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/<task>_train.json)")
    parser.add_argument("--only", default="", help="comma-separated subset of variant names (substring match)")
    parser.add_argument("--vary", action="append", default=[], metavar="FIELD=V1,V2",
                        help="add one variant per value of a config field (repeatable)")
    parser.add_argument("--base", action="append", default=[], metavar="FIELD=V",
                        help="config change applied to every --vary variant (repeatable)")
    args = parser.parse_args(argv)
    if not TRAIN.is_dir():
        print(f"skipped: {TRAIN} not found", file=sys.stderr)
        return 0
    import torch

    from selfvos.atomic import atomic_write_json
    from selfvos.data.sources import open_source

    every = args.every or DEFAULT_EVERY[args.task]
    out = Path(args.out or RESULTS / f"{args.task.replace('-', '_')}_train.json")
    torch.set_num_threads(2)
    model = load_model(args.checkpoint, args.config)
    digest = weights_sha256(args.checkpoint)
    collection = [v for i, v in enumerate(open_source(f"davis:{TRAIN}")) if i % every == 0]
    results: Dict[str, Dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        for name, settings in {**variants(args.task), **swept_variants(args.task, args.vary, args.base)}.items():
            if not wanted(name, args.only):
                continue
            scores = run_variant(model, collection, args.task, Path(tmp) / str(len(results)),
                                 gt_dir=TRAIN / "Annotations", **settings)
            results[name] = {**scores, **row_weights(args.task, digest)}
            print(f"{name:<44} J&F {results[name]['J&F']:5.1f}", flush=True)
    report = {"_about": {"data": f"davis2016-train-240p, one sequence in {every} ({len(collection)}), "
                                 f"{args.task}, official protocol", "checkpoint": args.checkpoint,
                         "weights_sha256": digest,
                         "machine": platform.platform(), "date": time.strftime("%Y-%m-%d")}, "results": results}
    atomic_write_json(out, report, sort_keys=False)
    print_table(results)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
