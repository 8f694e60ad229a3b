"""Clips/s of the pretraining data pipeline (decode + clip sampling + augmentation) next to the clips/s the
pretraining step consumes: does the training loop wait on data?

Sources, over the same videos (``../shared/data/videos`` by default, H.264 up to 1280x720):

- ``map``: :class:`~selfvos.data.sampling.ClipDataset` over ``video:<dir>`` (shuffled, as the trainer reads it);
- ``stream``: :class:`~selfvos.data.clip_stream.ClipStream` over ``stream:<shards>``, the same videos written by
  :func:`~selfvos.data.streaming.write_shards` into a temporary folder.

Every (source, size, workers) row builds a fresh dataset (``--clips-per-video`` clips per video; the defaults time
one pass over the 4 videos) and a DataLoader (``--batch`` clips of
``--frames`` frames + ``--refs`` references, ``ClipAugment`` on, ``prefetch_factor`` with workers) and reports
``first_batch_s`` (worker start + first batch) and ``clips_per_s`` over the first ``--batches`` batches, worker
start and the first batch included (the stream decodes a window's frames before its first item, so a rate that
left the first batch out would hide its decoding).

Consumption: the whole pretraining step (all objectives, forward + backward + Adam) from
``benchmarks/results/pretrain_step_speed.json``: ``batch / seconds_per_step`` per backbone layer at its size (128
px); at any other size the step time is scaled by the pixel ratio (``estimate: true``). ``waits`` is true when
the data clips/s is below the consumption. With 0 workers decoding runs between steps, so the loop runs at
``1 / (1/data + 1/consumption)`` clips/s (``serial_clips_per_s``); with workers it overlaps only where spare
cores exist (on 2 cores the workers and the step share them).

    python benchmarks/data_throughput.py                                   # full: 128 and 256 px, 0 and 2 workers
    python benchmarks/data_throughput.py --sizes 64 --workers 0 2 --batches 3 --clips-per-video 2 \
        --out /tmp/data_throughput_tiny.json
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from selfvos.atomic import atomic_write_json  # noqa: E402
from selfvos.data.augment import ClipAugment  # noqa: E402
from selfvos.data.clip_stream import ClipStream  # noqa: E402
from selfvos.data.sampling import ClipDataset, ClipSamplerConfig  # noqa: E402
from selfvos.data.sources import open_source  # noqa: E402
from selfvos.data.shards import write_shards  # noqa: E402


def build(source: str, spec: str, size: int, args: argparse.Namespace, clips: int):
    """A fresh dataset of at least ``clips`` items (nothing decoded yet, so forked workers inherit no decoder)."""
    collection = open_source(spec, max_side=args.max_side)
    per_video = max(args.clips_per_video, math.ceil(clips / len(collection)))
    cfg = ClipSamplerConfig(num_frames=args.frames, max_skip=3, num_refs=args.refs, size=(size, size), seed=0)
    if source == "map":
        return ClipDataset(collection, cfg, augment=ClipAugment(), clips_per_video=per_video)
    return ClipStream(collection, cfg, augment=ClipAugment(), clips_per_video=per_video,
                      buffer_videos=args.buffer_videos, batch_size=args.batch)


def measure(source: str, spec: str, size: int, workers: int, args: argparse.Namespace) -> Dict[str, Any]:
    dataset = build(source, spec, size, args, args.batches * args.batch)
    if isinstance(dataset, ClipStream):
        dataset.set_epoch(0)
    gc.collect()
    options = dict(prefetch_factor=args.prefetch) if workers else {}
    loader = DataLoader(dataset, batch_size=args.batch, shuffle=source == "map", drop_last=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0) if source == "map" else None, **options)
    start = time.perf_counter()
    batches = iter(loader)
    next(batches)
    first = time.perf_counter() - start
    for _ in range(args.batches - 1):
        next(batches)
    seconds = time.perf_counter() - start
    del batches
    return {"source": source, "size": size, "workers": workers, "prefetch": args.prefetch if workers else None,
            "first_batch_s": first, "seconds": seconds, "clips": args.batches * args.batch,
            "clips_per_s": args.batches * args.batch / seconds}


def consumption(path: Path, size: int) -> List[Dict[str, Any]]:
    """Clips/s the pretraining step consumes at ``size`` px, per backbone layer of the step-speed results."""
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    setting = data["setting"]
    scale = (size / setting["size"]) ** 2
    return [{"layer": r["layer"], "step_s": r["seconds_per_step"] * scale, "estimate": scale != 1.0,
             "clips_per_s": setting["batch"] / (r["seconds_per_step"] * scale)} for r in data["results"]]


def verdict(row: Dict[str, Any], needs: List[Dict[str, Any]]) -> Dict[str, Any]:
    out = {}
    for need in needs:
        data, step = row["clips_per_s"], need["clips_per_s"]
        out[need["layer"]] = {"consumes_clips_per_s": step, "estimate": need["estimate"], "waits": data < step,
                              "serial_clips_per_s": 1.0 / (1.0 / data + 1.0 / step)}
    return out


def table(rows: List[Dict[str, Any]]) -> str:
    head = f"{'source':7} {'px':>4} {'workers':>7} {'first s':>8} {'clips/s':>8}  consumption (layer: clips/s, waits?)"
    lines = [head, "-" * len(head)]
    for r in rows:
        need = ", ".join(f"{layer}: {v['consumes_clips_per_s']:.1f}{'~' if v['estimate'] else ''} "
                         f"{'WAITS' if v['waits'] else 'ok'}" for layer, v in r["training"].items()) or "-"
        lines.append(f"{r['source']:7} {r['size']:>4} {r['workers']:>7} {r['first_batch_s']:>8.2f} "
                     f"{r['clips_per_s']:>8.2f}  {need}")
    return "\n".join(lines + ["(~ = step time scaled from 128 px by the pixel ratio)"])


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", default=str(REPO.parent / "shared" / "data" / "videos"))
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--sources", nargs="+", choices=("map", "stream"), default=["map", "stream"])
    p.add_argument("--batch", type=int, default=2, help="clips per batch (pretrain_step_speed uses 2)")
    p.add_argument("--batches", type=int, default=40, help="batches timed (the first included)")
    p.add_argument("--clips-per-video", type=int, default=20, help="as data.clips_per_video of the recipes")
    p.add_argument("--frames", type=int, default=3)
    p.add_argument("--refs", type=int, default=2)
    p.add_argument("--max-side", type=int, default=480, help="videos are decoded with this longest side")
    p.add_argument("--prefetch", type=int, default=2, help="DataLoader prefetch_factor (with workers)")
    p.add_argument("--buffer-videos", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    p.add_argument("--step-speed", default=str(REPO / "benchmarks" / "results" / "pretrain_step_speed.json"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "data_throughput.json"))
    args = p.parse_args(argv)
    if not Path(args.videos).is_dir():
        print(f"skipped: no videos at {args.videos}")
        return 0
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        shards = write_shards(args.videos, Path(tmp) / "shards", videos_per_shard=1)
        specs = {"map": f"video:{args.videos}", "stream": f"stream:{shards}"}
        for size in args.sizes:
            needs = consumption(Path(args.step_speed), size)
            for source in args.sources:
                for workers in args.workers:
                    row = measure(source, specs[source], size, workers, args)
                    row["training"] = verdict(row, needs)
                    rows.append(row)
                    print(f"{source} {size}px workers={workers}: {row['clips_per_s']:.2f} clips/s", flush=True)
    result = {"setting": dict(vars(args)), "torch": torch.__version__, "machine": platform.machine(),
              "cpus": len(os.sched_getaffinity(0)), "results": rows}
    atomic_write_json(args.out, result)
    print(table(rows))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
