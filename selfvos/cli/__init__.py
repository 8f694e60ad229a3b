"""``selfvos`` command line: one entry point, one module per subcommand (each defines ``add_parser``).

Subcommand modules are imported lazily by name so ``selfvos --help`` stays fast; a subcommand's
heavy imports (torch, av, datasets) happen inside its ``run`` function.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional

from selfvos.errors import SelfvosInputError

# name -> module under selfvos.cli; a module that is not there yet is left out of the parser.
SUBCOMMANDS = {
    "evaluate": "evaluate",
    "data": "data",
    "list": "listing",
    "pseudo-labels": "pseudo_labels",
    "pretrain": "pretrain",
    "segment": "segment",
    "segment-dataset": "segment_dataset",
    "finetune": "finetune",
    "push": "push",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfvos",
        description="Self-supervised video object segmentation: pretrain, segment, evaluate, publish.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        try:
            mod = importlib.import_module(f"selfvos.cli.{module}")
        except ModuleNotFoundError as err:
            if err.name == f"selfvos.cli.{module}":
                continue
            raise
        mod.add_parser(sub, name)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    if args.command is None:
        parser.print_help()
        return 0
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "accepts_overrides", False):
        args.overrides = extra
    try:
        return int(args.func(args) or 0)
    except (SelfvosInputError, FileNotFoundError, KeyError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"selfvos {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
