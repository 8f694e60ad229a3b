"""Supervised heads on the selfvos backbone: pretrained init versus scratch at equal budget on davis2016-val-dev
(854x480): one-shot heads (STM, ...) one-shot, beside label propagation on the same pretrained backbone;
zero-shot heads (COSNet, LVO, FusionSeg, MP-Net, PDB, AGS) zero-shot, beside the label-free zero-shot pipeline
of the same MuG model.

    # fine-tune STM twice with recipes/configs/finetune/stm_davis16.yaml (same steps, data and seed; only the
    # backbone initialisation differs), then score both; the MuG model must exist (recipes/mug_pretrain.py):
    python benchmarks/heads_davis16.py --head stm --finetune --mug runs/mug_davis16_cpu/model
    # score existing fine-tuned checkpoints only:
    python benchmarks/heads_davis16.py --head stm --mug runs/mug_davis16_cpu/model
    # a zero-shot head (scored zero-shot); the table of docs/heads.md ran 200 steps per zero-shot head:
    python benchmarks/heads_davis16.py --head cosnet --finetune --mug runs/mug_davis16_cpu/model \
        --train.max_steps 200 --train.save_every 50 --eval.every 50
    # another recipe of a head (a file stem under recipes/configs/finetune), e.g. RVOS zero-shot:
    python benchmarks/heads_davis16.py --recipe rvos_zs_davis17 --finetune --mug runs/mug_davis16_cpu/model

``--recipe`` (default ``<head>_davis16``) names the run: the runs go to ``<runs>/finetune_<name>_<mug|scratch>`` and
the rows are keyed ``"<name>, init <init>"``, with ``name`` the recipe stem minus ``_davis16`` (so the default
recipe of a head gives its head name, as before). The task comes from the recipe's config
(:func:`selfvos.finetune.config.head_task`, e.g. RVOS by its ``mode``). Rows accumulate in
``benchmarks/results/heads_davis16.json``, so each later head adds its rows. Every row records the weights it was
measured on (path + ``weights_sha256``, the SHA-256 of model.safetensors, so that ``selfvos push --benchmark-json``
puts a row only on the card of those weights), what it measured (task, dataset, split), the fine-tuning budget
(steps, wall-clock minutes on this machine), the best J&F on the held-out DAVIS-2016 train videos (the checkpoint
choice: never val-dev) and val-dev J&F / J / F / frames per second, with ``task`` "one-shot-vos" or "zero-shot-vos"
(a zero-shot recipe: no mask is given, the whole clip is segmented and scored single-object, the DAVIS-2016
protocol; a head whose zero-shot output is instance ids, ``zero_shot_instances`` such as RVOS, is scored with every
predicted instance as the foreground, whatever the ground-truth PNG format, while its ``heldout_train_JF`` comes
from the fine-tuning validation, which matches its instances to the ground-truth objects). The zero-shot baseline is
the default label-free zero-shot pipeline (``ZeroShotConfig()``) on the ``--mug`` model: its row of
``benchmarks/results/label_free_davis16.json`` for the same weights (same SHA-256) when there is one, else measured
here. Published figures for orientation: OSVOS 81.2 J&F on davis2016-val-dev; STM 89.4 J&F on all 20 DAVIS-2016 val
sequences (ImageNet + static images + YouTube-VOS, 480p, days of GPU training).

Equal budget: the same recipe, steps, data, clips and seed; the pretrained run keeps the recipe's frozen
BatchNorm statistics (STM's practice), the scratch run trains them (random statistics would be no
normalisation at all).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional

REPO = Path(__file__).resolve().parents[1]
VAL_DEV = REPO.parent / "shared" / "data" / "davis2016-val-dev"
OUT = REPO / "benchmarks" / "results" / "heads_davis16.json"
# one recipe per head: recipes/configs/finetune/<head>_davis16.yaml (a new head adds its YAML, nothing here)
CONFIGS = {p.name[:-len("_davis16.yaml")]: p
           for p in sorted((REPO / "recipes" / "configs" / "finetune").glob("*_davis16.yaml"))}
LABEL_FREE = REPO / "benchmarks" / "results" / "label_free_davis16.json"
PUBLISHED = {"OSVOS (val-dev, published masks)": 81.2, "STM (all 20 val sequences, published)": 89.4}
# zero-shot, all 20 DAVIS-2016 val sequences, ImageNet pretraining + saliency / video data (the papers)
PUBLISHED_ZERO_SHOT = {"COSNet": 80.0, "AGS": 78.6, "PDB": 75.9, "LVO": 74.0, "FSEG": 68.0, "MP-Net": 67.9}
SPLIT = {"dataset": "DAVIS-2016", "split": "val-dev (4 sequences, 854x480)"}
MEASURED = {"task": "one-shot-vos", **SPLIT}
MEASURED_ZERO_SHOT = {"task": "zero-shot-vos", **SPLIT}
MAX_SIDE = 320  # longest side the heads process val-dev at: the recipes' training scale (scored at 854x480)
LABEL_FREE_KEY = "label-free zero-shot pipeline on the MuG model (no head)"


def head_task(head: str) -> str:
    """``"zero-shot"`` for a head that runs zero-shot only, else ``"one-shot"``."""
    from selfvos.hub.mixin import architectures

    return "zero-shot" if tuple(getattr(architectures().get(head), "tasks", ())) == ("zero-shot",) else "one-shot"


class Recipe(NamedTuple):
    """A fine-tuning recipe of the benchmark: ``name`` (run dirs and row keys), YAML ``path``, ``head``
    (architecture) and the ``task`` its config trains and is scored for."""

    name: str
    path: Path
    head: str
    task: str


def resolve_recipe(head: Optional[str], recipe: Optional[str]) -> Recipe:
    """``--head`` / ``--recipe`` -> the :class:`Recipe`: ``recipe`` a file stem under recipes/configs/finetune
    (default ``<head>_davis16``, head default ``stm``); the head is the recipe's ``model.type`` (a ``--head``
    naming another is an error) and the task ``head_task(config.model)``."""
    from selfvos.config import load_yaml
    from selfvos.errors import SelfvosInputError
    from selfvos.finetune.config import FinetuneConfig, head_task as config_task
    from selfvos.finetune.recipe import head_architecture

    stem = recipe if recipe is not None else f"{head or 'stm'}_davis16"
    folder = REPO / "recipes" / "configs" / "finetune"
    path = CONFIGS.get(stem[:-len("_davis16")]) if stem.endswith("_davis16") else None
    path = path or folder / f"{stem}.yaml"
    if "/" in stem or not path.is_file():
        choices = sorted(p.stem for p in folder.glob("*.yaml"))
        raise SelfvosInputError("--recipe", f"no recipe {stem!r} in {folder.relative_to(REPO)}; choose from {choices}")
    cfg = load_yaml(FinetuneConfig, path)
    architecture = head_architecture(cfg)
    if head is not None and head != architecture:
        raise SelfvosInputError("--head", f"recipe {stem!r} trains {architecture!r}, not {head!r}")
    task = config_task(cfg.model)
    if task not in ("one-shot", "zero-shot"):
        raise SelfvosInputError("--recipe", f"recipe {stem!r} trains the {task!r} task; this benchmark scores "
                                            "one-shot and zero-shot VOS")
    name = stem[:-len("_davis16")] if stem.endswith("_davis16") else stem
    return Recipe(name, path, architecture, task)


def run_dir(runs: str, name: str, init: str) -> Path:
    """``<runs>/finetune_<name>_<mug|scratch>``: where the recipe's fine-tuning run from ``init`` goes."""
    return Path(runs) / f"finetune_{name}_{'mug' if init != 'scratch' else 'scratch'}"


def head_row(head: str, checkpoint: Path, record: Dict[str, Any], chosen: Dict[str, Any], scores: Dict[str, Any],
             max_side: int, recipe: Optional[Recipe] = None) -> Dict[str, Any]:
    """The result row of a fine-tuned head: what was measured on which weights (``weights_sha256``), its
    training record (init, steps), the checkpoint choice (``best.json``) and the scores. ``recipe`` (default:
    the head's ``<head>_davis16.yaml``) gives the task and ``config``."""
    from selfvos.eval.runner import weights_sha256

    task = recipe.task if recipe is not None else head_task(head)
    config = recipe.path if recipe is not None else CONFIGS[head]
    measured = MEASURED_ZERO_SHOT if task == "zero-shot" else MEASURED
    return {"head": head, **measured, "init": record.get("init") or "scratch", "checkpoint": str(checkpoint),
            "weights_sha256": weights_sha256(checkpoint), "steps": record["step"], "best_step": chosen["step"],
            "heldout_train_JF": chosen["value"], "max_side": max_side,
            "config": str(config.relative_to(REPO)), **scores}


def baseline_row(checkpoint: str, scores: Dict[str, Any]) -> Dict[str, Any]:
    """The result row of label propagation on the MuG backbone ``checkpoint`` (no head)."""
    from selfvos.eval.runner import weights_sha256

    return {"head": "label propagation", **MEASURED, "checkpoint": checkpoint,
            "weights_sha256": weights_sha256(checkpoint), **scores}


def label_free_row(checkpoint: str, collection: Any, out: Path) -> Dict[str, Any]:
    """The row of the default label-free zero-shot pipeline on the MuG model ``checkpoint``: copied from
    ``label_free_davis16.json`` (its val-dev zero-shot row of the same weights) when there is one, else measured."""
    from selfvos.eval.runner import weights_sha256

    sha = weights_sha256(checkpoint)
    rows = json.loads(LABEL_FREE.read_text()).get("results", {}) if LABEL_FREE.is_file() else {}
    for key, row in rows.items():
        if key.endswith(" | val-dev | zero-shot") and row.get("weights_sha256") == sha:
            scores = {k: row[k] for k in ("J&F", "J", "F", "frames_per_s", "per_sequence_JF") if k in row}
            return {"head": "label-free zero-shot pipeline", **MEASURED_ZERO_SHOT, "checkpoint": checkpoint,
                    "weights_sha256": sha, **scores, "source": f"{LABEL_FREE.relative_to(REPO)}: {key}"}
    import selfvos
    from selfvos.eval.runner import run_variant
    from selfvos.inference.zero_shot import ZeroShotConfig

    mug = selfvos.from_pretrained(checkpoint).eval()
    scores = run_variant(mug, collection, "zero-shot", out, gt_dir=VAL_DEV / "Annotations" / "480p",
                         zero_shot=ZeroShotConfig())
    return {"head": "label-free zero-shot pipeline", **MEASURED_ZERO_SHOT, "checkpoint": checkpoint,
            "weights_sha256": sha, **scores}


def finetune(config: Path, init: str, output_dir: Path, overrides: list) -> float:
    """Run the recipe ``config`` once; returns the wall-clock minutes of this invocation."""
    from selfvos.cli.finetune import resolve_config
    from selfvos.finetune.recipe import run_finetune

    args = argparse.Namespace(config=str(config), init=init, output_dir=str(output_dir), print_config=False)
    start = time.perf_counter()
    run_finetune(resolve_config(args, overrides))
    return (time.perf_counter() - start) / 60


def any_instance(model: Any, **settings: Any) -> Any:
    """The DAVIS-2016 zero-shot protocol for a model whose zero-shot output is instance ids: a whole-video method
    for ``run_variant`` whose (H, W) uint8 masks are 1 wherever ``Segmenter(model, "zero-shot", **settings)``
    predicts any instance (id > 0), else 0."""
    import numpy as np

    from selfvos.inference import Segmenter

    def segment(video: Any) -> Any:
        for ids in Segmenter(model, "zero-shot", **settings).segment_video(video, progress=False):
            yield (np.asarray(ids) > 0).astype(np.uint8)

    return segment


def score(model: Any, collection: Any, out: Path, task: str = "one-shot", **settings: Any) -> Dict[str, Any]:
    """``task`` scores of ``model`` on val-dev (``Segmenter`` settings, e.g. ``max_side``; official protocol).
    Zero-shot instance ids (the model class's ``zero_shot_instances``) are scored by :func:`any_instance`."""
    from selfvos.eval.runner import run_variant

    gt_dir = VAL_DEV / "Annotations" / "480p"
    if task == "zero-shot" and getattr(type(model), "zero_shot_instances", False):
        return run_variant(model, collection, any_instance(model, **settings), out, gt_dir=gt_dir)
    return run_variant(model, collection, task, out, gt_dir=gt_dir, **settings)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--head", default=None, choices=sorted(CONFIGS),
                        help="the head (default stm, or the --recipe's); its recipe is <head>_davis16")
    parser.add_argument("--recipe", default=None,
                        help="a recipe file stem under recipes/configs/finetune (default <head>_davis16), e.g. "
                             "rvos_zs_davis17; runs and rows are named by it minus _davis16")
    parser.add_argument("--mug", default="runs/mug_davis16_cpu/model",
                        help="the MuG pretrained model (init + baseline)")
    parser.add_argument("--runs", default="runs", help="folder of the fine-tuning runs (<runs>/finetune_<name>_<init>)")
    parser.add_argument("--finetune", action="store_true", help="fine-tune from scratch and from --mug first")
    parser.add_argument("--max-side", type=int, default=MAX_SIDE,
                        help="longest side the head processes val-dev at (default 320, the recipes' training "
                             "scale); masks are upsampled and scored at 854x480")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the baseline on the MuG model (label propagation / label-free zero-shot)")
    parser.add_argument("--out", default=str(OUT))
    args, overrides = parser.parse_known_args(argv)

    import torch

    import selfvos
    from selfvos.data.sources import open_source
    from selfvos.eval.runner import print_table

    recipe = resolve_recipe(args.head, args.recipe)
    if not VAL_DEV.is_dir():
        raise SystemExit(f"{VAL_DEV}: davis2016-val-dev not found")
    torch.set_num_threads(2)
    task = recipe.task
    max_side = args.max_side
    collection = open_source(f"davis:{VAL_DEV}")
    out_path = Path(args.out)
    report = json.loads(out_path.read_text()) if out_path.is_file() else {"rows": {}}
    report.update(machine=platform.processor() or platform.machine(), torch=torch.__version__,
                  published_JF=PUBLISHED, published_zero_shot_JF=PUBLISHED_ZERO_SHOT)
    inits = {"selfvos MuG": args.mug, "scratch": "scratch"}
    minutes = {}
    if args.finetune:
        for label, init in inits.items():
            # random weights have no BatchNorm statistics worth freezing: scratch trains them
            extra = ["--train.freeze_bn", "false"] if init == "scratch" else []
            minutes[label] = finetune(recipe.path, init, run_dir(args.runs, recipe.name, init), [*overrides, *extra])
    with tempfile.TemporaryDirectory() as tmp:
        for label, init in inits.items():
            folder = run_dir(args.runs, recipe.name, init)
            best = folder / "best"
            if not (best / "model.safetensors").is_file():
                print(f"skipping {recipe.name} ({label}): no fine-tuned checkpoint at {best}")
                continue
            record = json.loads((folder / "model" / "training.json").read_text())
            chosen = json.loads((best / "best.json").read_text())
            model = selfvos.from_pretrained(best).eval()
            scores = score(model, collection, Path(tmp) / label, task, max_side=max_side)
            key = f"{recipe.name}, init {label}"
            row = head_row(recipe.head, best, record, chosen, scores, max_side, recipe)
            if label in minutes:
                row["finetune_minutes"] = minutes[label]
            elif key in report["rows"] and report["rows"][key].get("weights_sha256") == row["weights_sha256"]:
                row["finetune_minutes"] = report["rows"][key].get("finetune_minutes")
            report["rows"][key] = row
        if not args.no_baseline and task == "zero-shot":
            report["rows"][LABEL_FREE_KEY] = label_free_row(args.mug, collection, Path(tmp) / "label_free")
        elif not args.no_baseline:
            mug = selfvos.from_pretrained(args.mug).eval()
            scores = score(mug, collection, Path(tmp) / "lp")
            report["rows"]["label propagation on the MuG backbone (no head)"] = baseline_row(args.mug, scores)
    report["command"] = "python benchmarks/heads_davis16.py " + " ".join(argv if argv is not None else sys.argv[1:])
    from selfvos.atomic import atomic_write_json

    atomic_write_json(out_path, report)
    for measured in (MEASURED["task"], MEASURED_ZERO_SHOT["task"]):
        rows = {name: row for name, row in report["rows"].items() if row.get("task", MEASURED["task"]) == measured}
        if rows:
            print(f"\n{measured}:")
            print_table(rows)
    for name, row in report["rows"].items():
        if "heldout_train_JF" in row:
            print(f"{name}: held-out train J&F {row['heldout_train_JF']:.1f} (step {row['best_step']} of "
                  f"{row['steps']}), fine-tuning {row.get('finetune_minutes') or float('nan'):.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
