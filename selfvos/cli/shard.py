"""``selfvos shard SRC DST``: write a folder of video files as tar shards for the ``stream:`` source.

The shards hold the original video bytes (no re-encoding), ``--videos-per-shard`` videos each, with a listing per
shard and one ``index.json`` (:func:`selfvos.data.streaming.write_shards`); DST appears complete or not at all.
Pretrain on it with ``data.source: stream:DST``: each process reads whole shards (rank r of N: shards r, r+N,
...), so write at least as many shards as processes (several per process keeps the ranks balanced).

Examples::

    selfvos shard ../shared/data/videos runs/video_shards --videos-per-shard 2
    selfvos shard "/data/raw/*.mp4" /data/shards --videos-per-shard 256
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="write a folder of videos as tar shards for streaming pretraining (stream:DST)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="folder, glob or file of video files")
    p.add_argument("dst", help="output folder (must not exist unless --overwrite)")
    p.add_argument("--videos-per-shard", type=int, default=64, help="videos in each tar shard (default: 64)")
    p.add_argument("--overwrite", action="store_true", help="replace DST once the new shards are complete")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from selfvos.data.shards import list_shards, write_shards

    start = time.perf_counter()
    dst = write_shards(args.src, args.dst, videos_per_shard=args.videos_per_shard, overwrite=args.overwrite)
    shards = list_shards(dst)
    megabytes = sum(f.stat().st_size for f in Path(dst).iterdir()) / 1e6
    print(f"wrote {sum(s.count for s in shards)} videos in {len(shards)} shards to {dst} ({megabytes:.1f} MB, "
          f"{time.perf_counter() - start:.1f} s); pretrain on it with data.source: stream:{dst}")
    return 0
