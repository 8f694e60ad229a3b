"""``selfvos data inspect SRC`` and ``selfvos data convert SRC DST``: look at and move video datasets.

``SRC`` is anything :func:`selfvos.data.sources.open_source` opens (a DAVIS / YouTube-VOS root, a video file,
a folder of frames, ``synthetic:N``, a saved Hugging Face dataset, or ``hf:owner/name`` for a hub dataset id).
``convert`` writes a Hugging Face dataset (:mod:`selfvos.data.hf`) or DAVIS folders
(:mod:`selfvos.data.writers`); by default a dataset becomes DAVIS folders and everything else a dataset.

``inspect`` decodes every frame and mask of every video (``--quick``: frame 0 and the masks only) and exits
non-zero when one is damaged (a corrupt image, frames of different sizes, a video file that fails to decode part
way), naming the file and where decoding failed.

Examples::

    selfvos data inspect ../shared/data/davis2017-multi
    selfvos data convert ../shared/data/davis2016-train-240p out/davis16-train --to hf --max-side 240
    selfvos data convert out/davis16-train out/davis16-folders --to davis --sequences bear,boat
    HF_HUB_OFFLINE=1 selfvos data inspect hf:someone/tiny-vos --split train
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="inspect a video dataset or convert it (to a Hugging Face dataset or DAVIS folders)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    inspect = actions.add_parser("inspect", help="print one line per video: frames, size, fps, objects, annotated; "
                                                 "fail on damaged videos")
    _add_source_args(inspect)
    inspect.add_argument("--quick", action="store_true",
                         help="read only frame 0 and the masks (damage further into a video goes unnoticed)")
    inspect.set_defaults(func=run)

    convert = actions.add_parser("convert", help="write SRC as a Hugging Face dataset or as DAVIS folders")
    _add_source_args(convert)
    convert.add_argument("dst", help="output folder (must not exist unless --overwrite)")
    convert.add_argument("--to", choices=("hf", "davis"), default=None,
                         help="output format (default: davis for a dataset source, hf otherwise)")
    convert.add_argument("--max-side", type=int, default=None, help="shrink so that max(H, W) <= N (masks: nearest)")
    convert.add_argument("--layout", choices=("davis2017", "flat"), default="davis2017",
                         help="DAVIS folder layout: davis2017 (JPEGImages/480p/<seq>) or flat (JPEGImages/<seq>)")
    convert.add_argument("--overwrite", action="store_true", help="replace DST once the new copy is complete")
    convert.set_defaults(func=run)


def _add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="dataset root, video file, frame folder, synthetic:N, saved dataset, or hf:owner/name")
    p.add_argument("--sequences", default=None, help="comma-separated video names to keep (default: all)")
    p.add_argument("--split", default=None, help="split to read (source specific, e.g. train / val)")


def _parse_sequences(text: Optional[str]) -> Optional[List[str]]:
    names = [s.strip() for s in text.split(",") if s.strip()] if text else []
    return names or None


def open_collection(src: str, split: Optional[str] = None, sequences: Optional[Sequence[str]] = None):
    """Open ``src`` through the source registry and keep only ``sequences`` (all when None)."""
    from selfvos.data.sources import open_source

    options = {} if split is None else {"split": split}
    return open_source(src, **options).select(sequences)


def _video_row(video) -> List[str]:
    """name, frames, WxH, fps, objects, annotated for one LazyVideo (decodes at most frame 0 and its masks)."""
    height, width = getattr(video, "height", None), getattr(video, "width", None)
    if not height or not width:
        height, width = video.frame(0).shape[:2] if len(video) else (0, 0)
    annotated = video.annotated_indices() if video.has_masks else []
    objects = getattr(video, "num_objects", None)
    if objects is None:
        ids: set = set()
        for i in annotated:
            mask = video.mask(i)
            if mask is not None:
                ids.update(int(v) for v in set(mask.ravel().tolist()) - {0, video.void_value})
        objects = len(ids)
    fps = "-" if video.fps is None else f"{video.fps:g}"
    return [video.name, str(len(video)), f"{width}x{height}", fps, str(objects), str(len(annotated))]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned first column, right-aligned numbers, two spaces between columns."""
    widths = [max(len(str(r[c])) for r in [headers, *rows]) for c in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(v).ljust(w) if c == 0 else str(v).rjust(w) for c, (v, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _checked_row(video, quick: bool) -> Tuple[List[str], Optional[Exception]]:
    """The table row of ``video`` and None, or a ``damaged`` row and the error when reading it fails (every frame
    is decoded unless ``quick``)."""
    from selfvos.errors import SelfvosInputError

    try:
        row = _video_row(video)
        if not quick:
            video.verify()
        return row, None
    except SelfvosInputError as err:
        return [video.name, str(len(video)), "damaged", "-", "-", "-"], err


def _inspect(collection, quick: bool = False) -> int:
    """Print the table; raise (after it) for the damaged videos, each listed on stderr."""
    from selfvos.errors import SelfvosInputError

    checked = [_checked_row(video, quick) for video in collection]
    rows = [row for row, _ in checked]
    print(f"source: {collection.source}  kind: {collection.kind or '-'}  videos: {len(rows)}")
    print(format_table(["video", "frames", "size", "fps", "objects", "annotated"], rows))
    total_frames = sum(int(r[1]) for r in rows)
    total_annotated = sum(int(r[5]) for r in rows if r[5].isdigit())
    print(f"total: {len(rows)} videos, {total_frames} frames, {total_annotated} annotated frames")
    damaged = [err for _, err in checked if err is not None]
    if len(damaged) > 1:
        for err in damaged:
            print(f"damaged: {err}", file=sys.stderr)
        first = damaged[0]
        raise SelfvosInputError(first.path, f"{first.problem} (and {len(damaged) - 1} more damaged video(s), "
                                            "listed above)")
    if damaged:
        raise damaged[0]
    return 0


def _folder_megabytes(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def _convert(collection, args: argparse.Namespace) -> int:
    target = args.to or ("davis" if collection.kind == "hf" else "hf")
    start = time.perf_counter()
    if target == "hf":
        from selfvos.data.hf import to_hf_dataset

        dst = to_hf_dataset(collection, args.dst, max_side=args.max_side, overwrite=args.overwrite)
    else:
        from selfvos.data.writers import export_davis

        dst = export_davis(collection, args.dst, args.layout, max_side=args.max_side, overwrite=args.overwrite)
    seconds = time.perf_counter() - start
    frames = sum(len(v) for v in collection)
    print(f"wrote {len(collection)} videos ({frames} frames) as {target} to {dst} "
          f"({_folder_megabytes(Path(dst)):.1f} MB, {seconds:.1f} s)")
    return 0


def run(args: argparse.Namespace) -> int:
    collection = open_collection(args.src, args.split, _parse_sequences(args.sequences))
    if args.data_command == "inspect":
        return _inspect(collection, quick=args.quick)
    return _convert(collection, args)
