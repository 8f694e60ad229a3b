"""Zero-shot and one-shot accuracy and speed of a pretrained model on davis2016-val-dev (854x480), with ablations.

    python benchmarks/davis16.py --checkpoint runs/mug_davis16_cpu/model
    python benchmarks/davis16.py --pretrain                     # pretrain with recipes/configs/mug_davis16_cpu.yaml first
    python benchmarks/davis16.py --checkpoint ... --no-bootstrap-checkpoint runs/mug_davis16_cpu/checkpoints/step_0000800

Every variant segments the 4 val-dev sequences into palette PNGs (one-shot reads only each first-frame
annotation), which are scored with the official-parity evaluator (``selfvos.eval``). Variants:
- zero-shot: the default ``ZeroShotConfig`` (online/causal frame head + motion cue + GrabCut with its IoU
  guard + EMA; constants chosen on DAVIS-2016 train), offline mode, with co-attention references (N=5,
  weight 0.5), with the propagated prior of the previous outputs (best on train, not adopted), without the
  motion cue, GrabCut, the guard, all of them (the frame head alone), and the defaults before the train-set
  choice; the round-0 pseudo-label engine alone (manifold ranking + motion +
  GrabCut, no learning) is the floor the model has to add to;
- one-shot: label propagation on the model features (flip-averaged, with the default guided-filter refinement
  of the upsampled probabilities; without flip averaging; without the refinement; at short side 360 without
  flip averaging, the fast point for CPUs without native bf16), on raw Lab colour (the
  no-learning floor of BRIEF 7), and both; first-frame copy as the trivial floor;
- ``--no-bootstrap-checkpoint``: the default zero-shot, the frame head alone and one-shot on model features
  with the weights at the end of the first training round (trained on the initial pseudo-masks only, before
  any relabeling; a resumable checkpoint folder).
Published figures for reference: MuG zero-shot J&F 59.1, one-shot 64.7 (all 20 val sequences); first-frame
copy 33.2 on val-dev. Writes ``benchmarks/results/davis16.json`` and prints a table; the default zero-shot and
one-shot rows also go to ``davis16_model_card.json`` for ``selfvos push --benchmark-json``. Every row records
``weights_sha256``, the SHA-256 of the model.safetensors it was measured on (``None`` for the model-free floors),
so the card of other weights refuses these numbers.
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

from selfvos.eval.runner import load_model, print_table, row_weights, run_variant, wanted, weights_sha256

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "davis2016-val-dev"
CONFIG = REPO / "recipes" / "configs" / "mug_davis16_cpu.yaml"
GT = DATA / "Annotations" / "480p"
OUT = REPO / "benchmarks" / "results" / "davis16.json"
WEIGHT_ABLATED = ("zero-shot (default, online)", "zero-shot frame head alone", "one-shot (model features)")
PUBLISHED = {"zero-shot": 59.1, "one-shot": 64.7, "first-frame copy": 33.2}


def variants(model) -> Dict[str, tuple]:
    from selfvos.inference.one_shot import OneShotConfig
    from selfvos.inference.zero_shot import ZeroShotConfig

    zs = ZeroShotConfig()  # online, frame head + motion cue + guarded GrabCut + EMA

    def zero_shot(**changes) -> tuple:
        return "zero-shot", {"zero_shot": dataclasses.replace(zs, **changes)}

    return {
        "zero-shot (default, online)": zero_shot(),
        "zero-shot offline": zero_shot(mode="offline"),
        "zero-shot with co-attention refs (N=5, weight 0.5)": zero_shot(reference_weight=0.5),
        "zero-shot without motion cue": zero_shot(motion_weight=0.0),
        "zero-shot without GrabCut": zero_shot(grabcut_iterations=0),
        "zero-shot without the GrabCut IoU guard": zero_shot(grabcut_min_iou=0.0),
        "zero-shot with GrabCut on the whole frame (before the 60 px box)": zero_shot(grabcut_margin=None),
        "zero-shot with the propagated prior (weight 0.25, best on train)": zero_shot(propagation_weight=0.25),
        "zero-shot frame head alone": zero_shot(num_references=0, motion_weight=0.0, grabcut_iterations=0,
                                                temporal_momentum=0.0),
        "zero-shot, constants before the train-set choice": zero_shot(reference_weight=0.5, temporal_momentum=0.5,
                                                                      grabcut_min_iou=0.0),
        "zero-shot, threshold 0.4 (best on train)": zero_shot(threshold=0.4),
        "pseudo-label engine alone (no learning)": ("pseudo", {"max_side": 432}),
        "one-shot (model features)": ("one-shot", {"one_shot": OneShotConfig(features="model")}),
        "one-shot without flip averaging": ("one-shot", {"one_shot": OneShotConfig(flip_average=False)}),
        "one-shot without guided refinement": ("one-shot", {"one_shot": OneShotConfig(refine_radius=0)}),
        # the same 128 px window at 3/4 of the working size, one view instead of two: fewer pixels, half the
        # backbone calls and a smaller affinity block, for CPUs without native bf16 (see inference_flops.py);
        # a speed/accuracy point, not a choice
        "one-shot at short side 360 (radius 12, no flip averaging)": (
            "one-shot", {"one_shot": OneShotConfig(short_side=360, radius=12, flip_average=False)}),
        "one-shot (model + Lab)": ("one-shot", {"one_shot": OneShotConfig(features="both")}),
        "one-shot (Lab only, no learning)": ("one-shot", {"one_shot": OneShotConfig.lab_floor()}),
        "first-frame copy": ("copy", {}),
    }


CARD_ROWS = {"zero-shot (default, online)": "zero-shot-vos", "one-shot (model features)": "one-shot-vos"}


def card_results(results: Dict[str, Dict[str, Any]], command: str) -> list:
    """The default zero-shot and one-shot rows in the model-card format of ``selfvos.hub.card``
    (``selfvos push --benchmark-json``), each with the ``weights_sha256`` it was measured on."""
    return [{"task": task, "dataset": "DAVIS-2016", "split": "val-dev (4 sequences, 854x480)",
             "metrics": {k: round(results[name][k], 2) for k in ("J&F", "J", "F")}, "command": command,
             "weights_sha256": results[name]["weights_sha256"]}
            for name, task in CARD_ROWS.items() if name in results]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="exported model folder or Hub id (selfvos.from_pretrained), or a "
                        "step_XXXXXXX training checkpoint of a run of --config")
    parser.add_argument("--pretrain", action="store_true", help="pretrain with --config first")
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--no-bootstrap-checkpoint", help="resumable checkpoint at the end of training round 0")
    parser.add_argument("--only", default="", help="comma-separated subset of variant names (substring match)")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found", file=sys.stderr)
        return 0
    import torch

    from selfvos.atomic import atomic_write_json
    from selfvos.data.sources import open_source

    torch.set_num_threads(2)
    checkpoint = args.checkpoint
    if args.pretrain:
        from selfvos.config import load_yaml
        from selfvos.pretrain.recipe import PretrainConfig, run_pretraining

        checkpoint = str(run_pretraining(load_yaml(PretrainConfig, args.config)))
    if not checkpoint:
        parser.error("give --checkpoint or --pretrain")
    specs = {"bootstrapped": checkpoint}
    if args.no_bootstrap_checkpoint:
        specs["no bootstrapping"] = args.no_bootstrap_checkpoint
    models = {name: load_model(spec, args.config) for name, spec in specs.items()}
    digests = {name: weights_sha256(spec) for name, spec in specs.items()}  # the weights each row is measured on
    collection = open_source(f"davis:{DATA}")
    results: Dict[str, Dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model_name, model in models.items():
            for name, (task, settings) in variants(model).items():
                if not wanted(name, args.only):
                    continue
                if model_name != "bootstrapped" and name not in WEIGHT_ABLATED:
                    continue  # the others do not depend on the weights, or ablate the inference side
                key = name if model_name == "bootstrapped" else f"{name} [{model_name}]"
                with torch.inference_mode():
                    scores = run_variant(model, collection, task, Path(tmp) / key.replace(" ", "_"), gt_dir=GT,
                                         **settings)
                results[key] = {**scores, **row_weights(task, digests[model_name])}
                r = results[key]
                fps = f"{r['frames_per_s']:.2f}" if r["frames_per_s"] else "-"
                print(f"{key:<52} J&F {r['J&F']:5.1f}  J {r['J']:5.1f}  F {r['F']:5.1f}  frames/s {fps}", flush=True)
    report = {"_about": {"data": "davis2016-val-dev (4 sequences, 854x480), official protocol",
                         "checkpoint": checkpoint, "no_bootstrap_checkpoint": args.no_bootstrap_checkpoint,
                         "weights_sha256": digests,
                         "published_reference_JF": PUBLISHED, "machine": platform.platform(),
                         "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")},
              "results": results}
    atomic_write_json(args.out, report, sort_keys=False)
    command = "python benchmarks/davis16.py " + " ".join(argv if argv is not None else sys.argv[1:])
    card = card_results(results, command.strip())
    if card:
        atomic_write_json(Path(args.out).with_name(Path(args.out).stem + "_model_card.json"), card, sort_keys=False)
    print_table(results)
    print(f"published (all 20 val): MuG zero-shot 59.1, one-shot 64.7; first-frame copy on val-dev 33.2\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
