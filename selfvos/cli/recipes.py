"""What the recipe commands (``selfvos pretrain``, ``selfvos finetune``) and their ``recipes/*.py`` scripts share:
config resolution (YAML, shortcut flags, dotted overrides), ``--print-config`` and the script entry point."""
from __future__ import annotations

import argparse
import logging
from typing import Any, Callable, Dict, List, Optional, Sequence


def resolve(config_class: type, config_path: Optional[str], shortcuts: Dict[str, Any],
            overrides: Optional[Sequence[str]] = None, adjust: Optional[Callable[[Any, Dict[str, Any]], None]] = None):
    """``config_class`` from ``config_path`` (or its defaults), then the shortcut flags (dotted key -> value,
    ``adjust(cfg, shortcuts)`` may add more), then the dotted ``--section.key VALUE`` overrides."""
    from selfvos.config import apply_overrides, load_yaml

    cfg = load_yaml(config_class, config_path) if config_path else config_class()
    extra = dict(shortcuts)
    if adjust is not None:
        adjust(cfg, extra)
    if extra:
        cfg = apply_overrides(cfg, extra)
    return apply_overrides(cfg, list(overrides or []))


def print_config(cfg: Any) -> int:
    """``--print-config``: the resolved config as YAML."""
    import yaml

    from selfvos.config import to_dict

    print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return 0


def script_main(doc: str, add_arguments: Callable[[argparse.ArgumentParser], None],
                run: Callable[[argparse.Namespace], int], argv: Optional[List[str]] = None) -> int:
    """``recipes/<name>.py``: the same options and overrides as the ``selfvos`` subcommand, and the same
    failure report (one ``selfvos: error:`` line and its exit code, the traceback first with ``-v``)."""
    from selfvos.cli import Parser, report_error

    parser = Parser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks of errors")
    add_arguments(parser)
    args, overrides = parser.parse_known_args(argv)
    args.overrides = overrides
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        return run(args)
    except SystemExit:
        raise
    except BaseException as err:  # every failure ends in one line, KeyboardInterrupt included
        return report_error(err, args.verbose)
