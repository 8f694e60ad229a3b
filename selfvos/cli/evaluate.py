"""``selfvos evaluate``: official-parity DAVIS J/F of a folder of predicted masks against ground truth, or
YouTube-VIS AP/AR of a results JSON against a ground-truth JSON (``--task vis``).

    selfvos evaluate --pred PRED_DIR --gt GT_DIR [--sequences a,b] [--protocol official|all]
                     [--json OUT.json] [--plot OUT.png] [--multi-object auto|yes|no] [--workers N]
                     [--missing-as-empty]
    selfvos evaluate --task vis --gt GT.json --pred RESULTS.json [--json OUT.json]

Layout: ``PRED_DIR/<seq>/<frame>.png`` and ``GT_DIR/<seq>/<frame>.png``. Binary ground truth: > 0 is
foreground; palette ground truth: object ids (multi-object DAVIS-2017 rules with ``auto``).

As the official DAVIS code, every ground-truth frame needs a prediction of its name and size: a missing
sequence folder or frame, a misnamed or extra file (``0.png``, ``00000.jpg``) or a frame of another size is an
error naming the sequence and the frame (exit 2). ``--missing-as-empty`` scores missing frames as empty masks
instead, with a warning that counts them; the JSON records them (``missing_frames``). ``--json`` and
``--plot`` are checked before anything is scored.

``--task vis``: the YouTube-VIS API's metric (:mod:`selfvos.eval.vis`): video IoU, AP over IoU 0.50:0.05:0.95,
AP50, AP75, AP/AR by area, AR@1/10/100. ``GT.json`` holds ``videos``, ``categories`` and ``annotations``;
``RESULTS.json`` is the list of ``{video_id, category_id, score, segmentations}`` a YouTube-VIS submission holds.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from selfvos.cli.segment import bounded


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="DAVIS J/F evaluation of predicted masks (official protocol), or YouTube-VIS AP/AR",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=("davis", "vis"), default="davis",
                   help="davis: J/F of mask folders (default); vis: YouTube-VIS AP/AR of JSON files")
    p.add_argument("--pred", required=True, help="folder of predictions: PRED/<sequence>/<frame>.png "
                                                 "(--task vis: the results JSON)")
    p.add_argument("--gt", required=True, help="folder of annotations: GT/<sequence>/<frame>.png "
                                               "(--task vis: the ground-truth JSON)")
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


# DAVIS-only options and their defaults: given with --task vis, they are a usage error
DAVIS_ONLY = {"sequences": ("--sequences", None), "protocol": ("--protocol", "official"),
              "plot_path": ("--plot", None), "multi_object": ("--multi-object", "auto"),
              "workers": ("--workers", None), "missing_as_empty": ("--missing-as-empty", False)}


def run_vis(args: argparse.Namespace) -> int:
    """``--task vis``: score a YouTube-VIS results JSON against a ground-truth JSON."""
    from selfvos.atomic import atomic_write_json, naming_path
    from selfvos.errors import SelfvosInputError
    from selfvos.eval.vis import evaluate_vis_files, format_vis_table

    for attr, (option, default) in DAVIS_ONLY.items():
        if getattr(args, attr) != default:
            raise SelfvosInputError(option, "applies to --task davis only")
    check_output_file(args.json_path, "--json")
    result = evaluate_vis_files(args.gt, args.pred)
    print(format_vis_table(result))
    if args.json_path:
        doc = {"gt": str(args.gt), "pred": str(args.pred), **result.to_dict()}
        with naming_path(args.json_path):
            atomic_write_json(args.json_path, doc, sort_keys=False, newline=True)
        print(f"wrote {args.json_path}")
    return 0


def run(args: argparse.Namespace) -> int:
    import sys

    if args.task == "vis":
        return run_vis(args)

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
