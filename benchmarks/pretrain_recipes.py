"""Which pretraining recipe gives the better model? Default zero-shot and one-shot J&F of models pretrained
with variants of the recipe (length, training scale, ...).

    python benchmarks/pretrain_recipes.py \\
        --model "1600 steps=runs/mug_davis16_cpu/model" \\
        --model "3200 steps, the 1600 run extended=runs/mug_davis16_cpu_3200/model"
    python benchmarks/pretrain_recipes.py --update --model "3200 steps from scratch=runs/mug_davis16_cpu_3200_scratch/model"

For every model: the default zero-shot and the table's one-shot (``EARLY_ONE_SHOT``: the one-shot defaults when
the table was started, without flip averaging, radius 12, 5 previous frames) on davis2016-val-dev (854x480, as
``davis16.py``) and that one-shot on one DAVIS-2016 *train* sequence in three (where the inference defaults
were chosen; its human masks only score); rows added with ``--update`` are scored the same way. A model is an
exported folder (``selfvos.from_pretrained``) or a resumable ``step_XXXXXXX`` checkpoint of a run of
``--config``. ``--update`` keeps the rows of models not named in this call. Writes
``benchmarks/results/pretrain_recipes.json`` (every row records ``weights_sha256``, the SHA-256 of the
model.safetensors it was measured on) and prints a table.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Tuple

from selfvos.eval.runner import EARLY_ONE_SHOT, load_model, print_columns, run_variant, weights_sha256

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "recipes" / "configs" / "mug_davis16_cpu.yaml"
DATA = REPO.parent / "shared" / "data" / "davis2016-val-dev"
TRAIN = REPO.parent / "shared" / "data" / "davis2016-train-240p"
OUT = REPO / "benchmarks" / "results" / "pretrain_recipes.json"
TASKS = ("val-dev zero-shot", "val-dev one-shot", "train one-shot")


def parse_model(spec: str) -> Tuple[str, Path]:
    """``"name=path"`` -> (name, path)."""
    name, sep, path = spec.rpartition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--model wants NAME=PATH, got {spec!r}")
    return name, Path(path)


def evaluate(model, val, train, tmp: Path) -> Dict[str, Dict[str, Any]]:
    """The three default scores of one model on the val-dev and train collections."""
    from selfvos.inference.one_shot import OneShotConfig

    one_shot = OneShotConfig(**EARLY_ONE_SHOT)
    return {
        "val-dev zero-shot": run_variant(model, val, "zero-shot", tmp / "zs", gt_dir=DATA / "Annotations" / "480p"),
        "val-dev one-shot": run_variant(model, val, "one-shot", tmp / "os", gt_dir=DATA / "Annotations" / "480p",
                                        one_shot=one_shot),
        "train one-shot": run_variant(model, train, "one-shot", tmp / "train", gt_dir=TRAIN / "Annotations",
                                      one_shot=one_shot),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=parse_model, action="append", required=True, metavar="NAME=PATH")
    parser.add_argument("--config", default=str(CONFIG), help="the run config of training checkpoints")
    parser.add_argument("--update", action="store_true", help="keep the rows of models not named here")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    if not (DATA.is_dir() and TRAIN.is_dir()):
        print(f"skipped: {DATA} or {TRAIN} not found", file=sys.stderr)
        return 0
    import torch

    from selfvos.data.sources import open_source
    from selfvos.atomic import atomic_write_json

    torch.set_num_threads(2)
    val = list(open_source(f"davis:{DATA}"))  # opened once for every model
    train = [v for i, v in enumerate(open_source(f"davis:{TRAIN}")) if i % 3 == 0]
    out = Path(args.out)
    results: Dict[str, Any] = {}
    if args.update and out.is_file():
        results = json.loads(out.read_text())["results"]
    for name, path in args.model:
        model = load_model(str(path), args.config)
        with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
            results[name] = {"model": str(path), "weights_sha256": weights_sha256(str(path)),
                             **evaluate(model, val, train, Path(tmp))}
        print(name, " ".join(f"{t} {results[name][t]['J&F']:.1f}" for t in TASKS), flush=True)
    report = {"_about": {"data": "davis2016-val-dev (4 sequences, 854x480) and davis2016-train-240p (every 3rd "
                                 "sequence), default ZeroShotConfig, OneShotConfig(**EARLY_ONE_SHOT), "
                                 "official protocol",
                         "machine": platform.platform(), "date": time.strftime("%Y-%m-%d")}, "results": results}
    # rows of hour-long runs accumulate here (--update): replace the file atomically, never truncate it half-way
    atomic_write_json(out, report, sort_keys=False)
    print_columns(results, TASKS, "model")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
