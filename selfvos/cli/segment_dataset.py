"""``selfvos segment-dataset``: segment every sequence of a dataset into ``OUT_DIR/<seq>/<frame>.png``.

    selfvos segment-dataset --checkpoint CKPT --data DAVIS_ROOT --task zero-shot|one-shot --out OUT_DIR
                            [--sequences a,b] [--max-side N] [--device cpu|cuda] [--mode online|offline]

The output is ready for ``selfvos evaluate --pred OUT_DIR --gt DAVIS_ROOT/Annotations/480p``. One-shot reads
each sequence's FIRST-frame annotation and no other ground truth (void 255 is set to background);
zero-shot reads no annotation at all. ``--data`` is any ``open_source`` spec (``davis:PATH``, a folder, ...).

Outputs are decided per sequence: each ``OUT_DIR/<seq>`` is written into a temporary sibling and moved into
place only when all its frames are done, so every sequence folder is complete or absent (an earlier complete
one stays as it was); after an error or a kill the sequences finished before it are kept. Temporary folders a
killed run left in OUT_DIR are deleted by the next run. An existing ``OUT_DIR/<seq>`` may hold only masks.
Every sequence's frames (one size per video) and, for one-shot, first annotation are checked before the
model is loaded.

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


def input_folders(video) -> list:
    """Folders a sequence is read from (its frames' and annotations' folders, when it has files)."""
    paths = list(getattr(video, "frame_paths", None) or []) + list((getattr(video, "mask_paths", None) or {}).values())
    return sorted({str(Path(path).parent) for path in paths})


def first_mask_of(video, task: str):
    """The one-shot starting mask of ``video`` (None for zero-shot); an error when it holds no object."""
    from selfvos.errors import SelfvosInputError

    if task != "one-shot":
        return None
    mask = first_frame_mask(video)
    if mask is None or not mask.any():
        raise SelfvosInputError(video.source or video.name, "one-shot needs an object in the first frame's annotation")
    return mask


def check_sequences(collection, args: argparse.Namespace) -> None:
    """Before any work: ``--out`` is a folder (or new), every sequence's output folder can be replaced without
    touching an input, its frames share one size and (one-shot) its first annotation has an object."""
    from selfvos.cli.segment import check_frame_sizes, check_not_overwritten
    from selfvos.data.writers import check_output_folder
    from selfvos.errors import SelfvosInputError

    out_root = Path(args.out)
    if out_root.exists() and not out_root.is_dir():
        raise SelfvosInputError(out_root, "--out exists and is not a folder")
    for video in collection:
        out_dir = out_root / video.name
        check_output_folder(out_dir, "--out")
        check_not_overwritten(str(out_dir), "--out", [args.data, args.checkpoint, *input_folders(video)],
                              as_folder=True)
        check_frame_sizes(video)
        first_mask_of(video, args.task)


def run(args: argparse.Namespace) -> int:
    import time
    from contextlib import closing

    from tqdm.auto import tqdm

    from selfvos.cli.segment import check_task, load_model, make_segmenter
    from selfvos.data.sources import open_source
    from selfvos.atomic import clean_stale_staging
    from selfvos.errors import SelfvosInputError
    from selfvos.inference.io import write_mask_folder

    sequences = [s.strip() for s in args.sequences.split(",") if s.strip()] if args.sequences else None
    collection = open_source(args.data).select(sequences)
    if len(collection) == 0:
        raise SelfvosInputError(args.data, "no sequences to segment")
    check_sequences(collection, args)
    model = load_model(args.checkpoint, args.device)
    check_task(model, args.task, args.checkpoint)
    segmenter = make_segmenter(model, args, args.task)
    out_root = Path(args.out)
    clean_stale_staging(out_root)
    start, frames = time.perf_counter(), 0
    # closed progress bars and generators: nothing is printed after an error has been reported
    with tqdm(collection, desc=args.task, unit="video", disable=len(collection) < 2) as videos:
        for video in videos:
            masks = segmenter.segment_video(video, first_mask=first_mask_of(video, args.task), progress=True)
            with closing(masks):
                frames += len(write_mask_folder(out_root / video.name, video.frame_names, masks))
    seconds = time.perf_counter() - start
    print(f"{args.task}: {len(collection)} sequences, {frames} frames -> {out_root} "
          f"in {seconds:.1f} s ({frames / max(seconds, 1e-9):.2f} frames/s)")
    return 0
