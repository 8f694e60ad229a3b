"""``selfvos pretrain [--config YAML] [--data SPEC] [--section.key VALUE ...]``: MuG pretraining.

The same entry point as ``accelerate launch recipes/mug_pretrain.py``; run it under ``accelerate launch``
for several processes / GPUs.
"""
from __future__ import annotations

import argparse
from typing import List, Optional


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name, help="MuG self-supervised pretraining with bootstrapped pseudo-masks",
        description="Pretrain a backbone on unlabeled video. Any config value can be overridden with a dotted "
                    "flag, e.g. --train.max_steps 100 --bootstrap.rounds 3 --model.backbone.name resnet34.",
    )
    add_arguments(p)
    p.set_defaults(func=run, accepts_overrides=True)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (recipes/configs/*.yaml); default: built-in synthetic videos")
    p.add_argument("--data", help="videos: any selfvos data source, e.g. davis:PATH, video:clip.mp4, hf:PATH, synthetic:8")
    p.add_argument("--output-dir", help="shortcut for --train.output_dir")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def resolve_config(args: argparse.Namespace, overrides: Optional[List[str]] = None):
    from selfvos.cli.recipes import resolve
    from selfvos.pretrain.recipe import PretrainConfig

    def data_source(cfg, extra) -> None:
        if args.data:
            extra["data.source"] = args.data
            if not args.config or ":" in args.data or args.data != cfg.data.source:
                extra["data.options"] = {}  # options belong to the source they were written for

    shortcuts = {"train.output_dir": args.output_dir} if args.output_dir else {}
    return resolve(PretrainConfig, args.config, shortcuts, overrides, adjust=data_source)


def run(args: argparse.Namespace) -> int:
    from selfvos.cli.recipes import print_config
    from selfvos.pretrain.recipe import run_pretraining

    cfg = resolve_config(args, getattr(args, "overrides", []))
    if args.print_config:
        return print_config(cfg)
    print(f"pretrained model: {run_pretraining(cfg)}")
    return 0
