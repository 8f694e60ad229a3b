"""``selfvos`` command line: one entry point, one module per subcommand (each defines ``add_parser``).

Subcommand modules are imported lazily by name so ``selfvos --help`` stays fast; a subcommand's
heavy imports (torch, av, datasets) happen inside its ``run`` function.

Every failure ends with exactly one line ``selfvos: error: <file or option>: <problem>`` on stderr and a
non-zero exit, never a traceback (:func:`report_error`):

- exit 2: bad input or usage (``SelfvosInputError``, config errors, a missing/unreadable path, argparse);
- exit 1: the environment or selfvos itself (a full disk, any other ``OSError``, a stopped run, and
  ``internal error: <Type>: <message>`` for an unexpected exception; ``-v`` prints its traceback first);
- exit 130: interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from typing import List, NoReturn, Optional

from selfvos.errors import SelfvosError, SelfvosInputError

PROG = "selfvos"
EXIT_USAGE, EXIT_FAILURE, EXIT_INTERRUPTED = 2, 1, 130
# OSErrors that mean "the path given is wrong" (usage, exit 2) rather than "the system failed" (exit 1)
PATH_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, FileExistsError)

# name -> module under selfvos.cli; a module that is not there yet is left out of the parser.
SUBCOMMANDS = {
    "evaluate": "evaluate",
    "data": "data",
    "list": "listing",
    "pseudo-labels": "pseudo_labels",
    "pretrain": "pretrain",
    "adapt": "adapt",
    "segment": "segment",
    "segment-dataset": "segment_dataset",
    "finetune": "finetune",
    "push": "push",
    "shard": "shard",
}


class Parser(argparse.ArgumentParser):
    """``argparse`` whose usage errors end with the one ``selfvos: error: <option>: <problem>`` line."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(error_line(message.removeprefix("argument ")), file=sys.stderr)
        sys.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Self-supervised video object segmentation: pretrain, segment, evaluate, publish.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        try:
            mod = importlib.import_module(f"selfvos.cli.{module}")
        except ModuleNotFoundError as err:
            if err.name == f"selfvos.cli.{module}":
                continue
            raise
        mod.add_parser(sub, name)
        sub.choices[name].add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                       help="debug logging and tracebacks of errors")
    return parser


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) as one space."""
    return " ".join(str(text).split())


def error_line(message: str) -> str:
    """The last line every failing command prints."""
    return f"{PROG}: error: {one_line(message)}"


def describe_os_error(err: OSError) -> str:
    """``"<path>: <problem>"`` for an ``OSError`` (``"out/00003.png: no space left on device"``); one raised
    with a message of its own (``FileNotFoundError("x.yaml: config file not found")``) keeps it."""
    if err.errno is None and err.filename is None:
        return str(err) or type(err).__name__
    problem = err.strerror or str(err)
    problem = problem[:1].lower() + problem[1:]
    if err.filename is None:
        return f"system error: {problem}"
    where = str(err.filename)
    if getattr(err, "filename2", None) is not None:
        where = f"{where} -> {err.filename2}"
    return f"{where}: {problem}"


def describe(err: BaseException, verbose: bool) -> tuple:
    """(exit code, message) of an exception that ended a command."""
    if isinstance(err, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(err, SelfvosInputError):
        message = str(err) if err.path else f"config: {err.problem}"
        return EXIT_USAGE, message
    if isinstance(err, SelfvosError):
        return EXIT_FAILURE, str(err)
    if isinstance(err, OSError):
        return (EXIT_USAGE if isinstance(err, PATH_ERRORS) else EXIT_FAILURE), describe_os_error(err)
    if isinstance(err, KeyError) and err.args and isinstance(err.args[0], str) and " " in err.args[0]:
        return EXIT_USAGE, err.args[0]  # a sentence from a registry lookup ("unknown model 'x'; registered ...")
    hint = "" if verbose else " (rerun with -v for the traceback)"
    return EXIT_FAILURE, f"internal error: {type(err).__name__}: {err}{hint}"


def close_progress_bars() -> None:
    """Close the tqdm bars a failure left open, so that none is drawn after (or glued to) the error line."""
    std = sys.modules.get("tqdm.std")
    for bar in list(getattr(getattr(std, "tqdm", None), "_instances", ())):
        bar.close()


def report_error(err: BaseException, verbose: bool = False) -> int:
    """Print the one ``selfvos: error:`` line for ``err`` (after its traceback with ``verbose``, and after
    closing any progress bar left open); returns the exit code."""
    code, message = describe(err, verbose)
    close_progress_bars()
    if verbose and not isinstance(err, KeyboardInterrupt):
        traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    sys.stderr.flush()
    print(error_line(message), file=sys.stderr)
    return code


def parse(parser: argparse.ArgumentParser, argv: Optional[List[str]]) -> argparse.Namespace:
    """Parsed arguments; the unknown ``--section.key VALUE`` ones go to ``args.overrides`` for the commands
    that take config overrides and are a usage error for the others."""
    args, extra = parser.parse_known_args(argv)
    if args.command is not None:
        if getattr(args, "accepts_overrides", False):
            args.overrides = extra
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    """Run one ``selfvos`` command; returns its exit code (0 = success)."""
    parser = build_parser()
    try:
        args = parse(parser, argv)
    except SystemExit as done:  # --help, or a usage error already printed
        return done.code if isinstance(done.code, int) else EXIT_USAGE
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except SystemExit:
        raise
    except BaseException as err:  # every failure ends in one line, KeyboardInterrupt included
        return report_error(err, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
