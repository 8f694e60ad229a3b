"""``selfvos evaluate``: official-parity DAVIS J/F of a folder of predicted masks against ground truth.

    selfvos evaluate --pred PRED_DIR --gt GT_DIR [--sequences a,b] [--protocol official|all]
                     [--json OUT.json] [--plot OUT.png] [--multi-object auto|yes|no] [--workers N]
                     [--missing-as-empty]

Layout: ``PRED_DIR/<seq>/<frame>.png`` and ``GT_DIR/<seq>/<frame>.png``. Binary ground truth: > 0 is
foreground; palette ground truth: object ids (multi-object DAVIS-2017 rules with ``auto``).

As the official DAVIS code, every ground-truth frame needs a prediction of its name and size: a missing
sequence folder or frame, a misnamed or extra file (``0.png``, ``00000.jpg``) or a frame of another size is an
error naming the sequence and the frame (exit 2). ``--missing-as-empty`` scores missing frames as empty masks
instead, with a warning that counts them; the JSON records them (``missing_frames``). ``--json`` and
``--plot`` are checked before anything is scored.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from selfvos.cli.segment import bounded


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="DAVIS J/F evaluation of predicted masks (official protocol)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pred", required=True, help="folder of predictions: PRED/<sequence>/<frame>.png")
    p.add_argument("--gt", required=True, help="folder of annotations: GT/<sequence>/<frame>.png")
    p.add_argument("--sequences", default=None, help="comma-separated sequences (default: every GT sequence)")
    p.add_argument("--protocol", choices=("official", "all"), default="official",
                   help="official: frames 1..N-2 (first and last excluded); all: every frame")
    p.add_argument("--json", dest="json_path", default=None, help="write scores as JSON here")
    p.add_argument("--plot", dest="plot_path", default=None, help="write a per-sequence J/F bar plot (PNG)")
    p.add_argument("--multi-object", choices=("auto", "yes", "no"), default="auto",
                   help="auto: palette GT -> multi-object (ids), grayscale GT -> binary (> 0)")
    p.add_argument("--workers", type=bounded(int, low=1), default=None,
                   help="processes (default: one per available core, at most one per sequence)")
    p.add_argument("--missing-as-empty", action="store_true",
                   help="score a ground-truth frame without prediction as an empty mask (counted and warned) "
                        "instead of stopping with an error")
    p.set_defaults(func=run)


def check_output_file(path: Optional[str], option: str) -> None:
    """``path`` can be written as a file: not a folder, in a folder that exists."""
    from selfvos.errors import SelfvosInputError

    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise SelfvosInputError(path, f"{option} is a folder; give a file name")
    if not target.parent.is_dir():
        problem = "is not a folder" if target.parent.exists() else "does not exist"
        raise SelfvosInputError(path, f"{option}: the folder {target.parent} {problem}")


def run(args: argparse.Namespace) -> int:
    import sys

    from selfvos.eval.io import evaluate_folders
    from selfvos.eval.report import (
        format_table,
        missing_summary,
        plot_sequences,
        write_json,
    )

    check_output_file(args.json_path, "--json")
    check_output_file(args.plot_path, "--plot")
    sequences = [s.strip() for s in args.sequences.split(",") if s.strip()] if args.sequences else None
    result = evaluate_folders(args.pred, args.gt, sequences=sequences, protocol=args.protocol,
                              multi_object=args.multi_object, workers=args.workers,
                              missing_as_empty=args.missing_as_empty)
    print(format_table(result))
    if result.missing_count:
        print(f"selfvos: warning: {missing_summary(result)}", file=sys.stderr)
    if args.json_path:
        print(f"wrote {write_json(result, args.json_path)}")
    if args.plot_path:
        print(f"wrote {plot_sequences(result, args.plot_path)}")
    return 0
