"""``selfvos segment-dataset``: segment every sequence of a dataset into ``OUT_DIR/<seq>/<frame>.png``.

    selfvos segment-dataset --checkpoint CKPT --data DAVIS_ROOT --task zero-shot|one-shot --out OUT_DIR
                            [--sequences a,b] [--max-side N] [--device cpu|cuda] [--mode online|offline]

The output is ready for ``selfvos evaluate --pred OUT_DIR --gt DAVIS_ROOT/Annotations/480p``. One-shot reads
each sequence's FIRST-frame annotation and no other ground truth (void 255 is set to background);
zero-shot reads no annotation at all. ``--data`` is any ``open_source`` spec (``davis:PATH``, a folder, ...).

Example::

    selfvos segment-dataset --checkpoint runs/mug/final --data ../shared/data/davis2016-val-dev \\
        --task one-shot --out out/dev-oneshot && \\
    selfvos evaluate --pred out/dev-oneshot --gt ../shared/data/davis2016-val-dev/Annotations/480p
"""
from __future__ import annotations

import argparse
from pathlib import Path

from selfvos.cli.segment import add_common_options
from selfvos.data.video import first_frame_mask


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="segment every sequence of a dataset (zero-shot or one-shot) for evaluation",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint folder (config.json + model.safetensors) or Hub id")
    p.add_argument("--data", required=True, help="dataset root or open_source spec (davis:PATH, ...)")
    p.add_argument("--out", required=True, help="output folder: OUT/<sequence>/<frame>.png")
    p.add_argument("--sequences", default=None, help="comma-separated sequence names (default: all)")
    add_common_options(p, tasks=("zero-shot", "one-shot"), default_task=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    from tqdm.auto import tqdm

    from selfvos.cli.segment import check_task, load_model, make_segmenter
    from selfvos.data.sources import open_source
    from selfvos.errors import SelfvosInputError
    from selfvos.inference.io import write_masks

    sequences = [s.strip() for s in args.sequences.split(",") if s.strip()] if args.sequences else None
    collection = open_source(args.data).select(sequences)
    if len(collection) == 0:
        raise SelfvosInputError(args.data, "no sequences to segment")
    model = load_model(args.checkpoint, args.device)
    check_task(model, args.task, args.checkpoint)
    segmenter = make_segmenter(model, args, args.task)
    out_root = Path(args.out)
    start, frames = time.perf_counter(), 0
    for video in tqdm(collection, desc=args.task, unit="video", disable=len(collection) < 2):
        first_mask = None
        if args.task == "one-shot":
            first_mask = first_frame_mask(video)
            if first_mask is None or not first_mask.any():
                raise SelfvosInputError(video.source or video.name,
                                        "one-shot needs an object in the first frame's annotation")
        masks = segmenter.segment_video(video, first_mask=first_mask, progress=True)
        frames += len(write_masks(out_root / video.name, video.frame_names, masks))
    seconds = time.perf_counter() - start
    print(f"{args.task}: {len(collection)} sequences, {frames} frames -> {out_root} "
          f"in {seconds:.1f} s ({frames / max(seconds, 1e-9):.2f} frames/s)")
    return 0
