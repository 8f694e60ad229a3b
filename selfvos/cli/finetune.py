"""``selfvos finetune [--config YAML] [--init CKPT] [--section.key VALUE ...]``: fine-tune a supervised head.

The same entry point as ``accelerate launch recipes/finetune.py``; run it under ``accelerate launch`` for
several processes / GPUs. The head is chosen by the config's ``model.type`` (``selfvos list architectures``).
"""
from __future__ import annotations

import argparse
from typing import List, Optional


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name, help="fine-tune a supervised VOS head (STM, ...) on annotated videos from a pretrained backbone",
        description="Fine-tune a head. Any config value can be overridden with a dotted flag, e.g. "
                    "--train.max_steps 200 --data.clip.size '[192, 320]' --model.decoder_dim 64.",
    )
    add_arguments(p)
    p.set_defaults(func=run, accepts_overrides=True)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (recipes/configs/finetune/*.yaml); default: STM on DAVIS-2016 train")
    p.add_argument("--init", help="checkpoint whose backbone initialises the head's backbones (e.g. "
                                  "runs/mug_davis16_cpu/model); 'scratch' for random weights")
    p.add_argument("--output-dir", help="shortcut for --train.output_dir")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def resolve_config(args: argparse.Namespace, overrides: Optional[List[str]] = None):
    from selfvos.cli.recipes import resolve
    from selfvos.finetune.config import FinetuneConfig

    shortcuts = {}
    if args.init:
        shortcuts["init"] = None if args.init == "scratch" else args.init
    if args.output_dir:
        shortcuts["train.output_dir"] = args.output_dir
    return resolve(FinetuneConfig, args.config, shortcuts, overrides)


def run(args: argparse.Namespace) -> int:
    from selfvos.cli.recipes import print_config
    from selfvos.finetune.recipe import run_finetune

    cfg = resolve_config(args, getattr(args, "overrides", []))
    if args.print_config:
        return print_config(cfg)
    out = run_finetune(cfg)
    print(f"fine-tuned model: {out} (best on the held-out videos: {out.parent / 'best'})")
    return 0
