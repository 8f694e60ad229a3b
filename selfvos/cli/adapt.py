"""``selfvos adapt --checkpoint CKPT --data SPEC --out DIR [--minutes N] [--section.key VALUE ...]``:
label-free adaptation of a pretrained MuG model to the user's unlabeled videos within a wall-clock budget.

It continues MuG pretraining (pseudo-masks, every objective, bootstrapped relabeling) from the checkpoint and
exports ``DIR/model`` (:mod:`selfvos.pretrain.adapt`). Dotted flags override the recipe (``--train.lr 1e-4``,
``--bootstrap.rounds 3``) or the adaptation's own settings (``--adapt.label_fraction 0.3``). The same command
again resumes an interrupted run.
"""
from __future__ import annotations

import argparse
import math


def positive_minutes(text: str) -> float:
    """``--minutes``: a positive, finite number of minutes."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of minutes, got {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number of minutes, got {text!r}")
    return value


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name, help="adapt a pretrained MuG model to unlabeled videos within a time budget",
        description="Continue MuG pretraining from CKPT on the unlabeled videos of SPEC (pseudo-masks, all "
                    "objectives, bootstrapped relabeling) for at most --minutes of wall-clock time, then export "
                    "DIR/model. Dotted flags override the recipe (--train.lr 1e-4) or the adaptation "
                    "(--adapt.label_fraction 0.3). Rerun the same command to resume.",
    )
    p.add_argument("--checkpoint", required=True, help="the pretrained MuG model: an exported folder or a Hub id")
    p.add_argument("--data", required=True, help="the videos: any selfvos data source, e.g. video:my_videos/")
    p.add_argument("--out", required=True, help="run folder: pseudo-labels, checkpoints, and DIR/model at the end")
    p.add_argument("--minutes", type=positive_minutes, default=10.0,
                   help="wall-clock budget of the whole adaptation (default 10)")
    p.set_defaults(func=run, accepts_overrides=True)


def run(args: argparse.Namespace) -> int:
    from selfvos.pretrain.adapt import run_adapt, split_overrides

    own, recipe = split_overrides(getattr(args, "overrides", []))
    out = run_adapt(args.checkpoint, args.data, args.out, ["--minutes", str(args.minutes), *own], recipe)
    print(f"adapted model: {out}")
    return 0
