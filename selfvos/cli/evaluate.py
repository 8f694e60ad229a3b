"""``selfvos evaluate``: official-parity DAVIS J/F of a folder of predicted masks against ground truth.

    selfvos evaluate --pred PRED_DIR --gt GT_DIR [--sequences a,b] [--protocol official|all]
                     [--json OUT.json] [--plot OUT.png] [--multi-object auto|yes|no] [--workers N]

Layout: ``PRED_DIR/<seq>/<frame>.png`` and ``GT_DIR/<seq>/<frame>.png``. Binary ground truth: > 0 is
foreground; palette ground truth: object ids (multi-object DAVIS-2017 rules with ``auto``).
"""
from __future__ import annotations

import argparse


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
    p.add_argument("--workers", type=int, default=None,
                   help="processes (default: one per available core, at most one per sequence)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from selfvos.eval.io import evaluate_folders
    from selfvos.eval.report import format_table, plot_sequences, write_json

    sequences = [s.strip() for s in args.sequences.split(",") if s.strip()] if args.sequences else None
    result = evaluate_folders(args.pred, args.gt, sequences=sequences, protocol=args.protocol,
                              multi_object=args.multi_object, workers=args.workers)
    print(format_table(result))
    if args.json_path:
        print(f"wrote {write_json(result, args.json_path)}")
    if args.plot_path:
        print(f"wrote {plot_sequences(result, args.plot_path)}")
    return 0
