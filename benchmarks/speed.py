"""Every stage of selfvos against the limit of this machine: the fp32 (and bf16) matmul peak measured in the same run.

Stages (``--stages``, default all but ``memory``):

- ``pretrain``: MuG pretraining steps (forward + backward + Adam, the recipe's ResNet-18 at output stride 8, batch
  4, T = 3 frames of S x S px, R = 2 references of S/2 px) with one granularity at a time, all four, and all four
  under bf16 autocast, at S = 128 and 256; FLOPs per step (``torch.utils.flop_counter``), images/s (B x T / s) and
  the fraction of the fp32 matmul peak; plus the data pipeline (decode + clip sampling + augmentation, 0 workers; the
  recipe's DAVIS 240p JPEGs feed the steps, the mp4 videos are timed beside them) and the whole step = data + all
  objectives, which is what a 2-core machine runs serially.
- ``finetune``: one training step of every head's recipe (its config, a real batch of its clips from
  ``../shared/data``, its loss, AdamW), steps/s and fraction of the peak; the batch's data time beside it.
- ``inference``: zero-shot and one-shot frames/s at 854x480 (davis2016-val-dev ``blackswan``, 50 frames, whole
  ``Segmenter.segment_video`` incl. reading frames and writing ids) for label propagation / the label-free pipeline
  on the MuG model (their default processing size) and every head (``runs/finetune_<head>_mug/best`` when it
  exists, else random weights; processed at ``--head-max-side``, the scale the heads were trained and benchmarked at).
- ``memory``: peak RSS of every one-shot core over a 10,000-frame synthetic video (``one_shot_memory.py``, one
  process per core, RSS after 100, 1,000 and 10,000 frames; frames of ``--memory-size`` so a run takes minutes).
- ``evaluator``: wall time of ``selfvos evaluate`` on the OSVOS oracle masks of val-dev; with ``--official-dir`` (a
  davis2017-evaluation checkout) ``eval_speed.py`` times the official code beside it.

    python benchmarks/speed.py                                  # all stages but memory (~25 min, idle machine)
    python benchmarks/speed.py --stages memory                  # one-shot memory vs length (~20 min)
    python benchmarks/speed.py --stages pretrain --sizes 128    # one stage

Writes ``benchmarks/results/speed.json`` (merged by stage: running one stage keeps the others) and prints a table.
Never time anything while another job runs: the peaks measured before and after each stage show it when one did.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
SHARED = REPO.parent / "shared" / "data"
VAL_DEV = SHARED / "davis2016-val-dev"
ONE_SHOT_HEADS = ("stm", "munet", "feelvos", "cfbi", "cfbi_plus", "agame", "rvos")
ZERO_SHOT_HEADS = ("cosnet", "lvo", "fusionseg", "mpnet", "pdb", "ags", "rvos_zs")
GRANULARITIES = ("frame", "tracking", "matching", "memory")
TARGETS = {"whole pretraining step at 256 px, fraction of fp32 peak": 0.5, "zero-shot fps": 6.0,
           "one-shot label propagation fps": 3.0, "memory 10k / 100 frames": 1.2}


def peaks() -> Dict[str, float]:
    """fp32 and bf16 matmul GFLOP/s (2048^3, best of 3)."""
    from selfvos.utils.profiling import matmul_peak_gflops

    return {"float32": matmul_peak_gflops(), "bfloat16": matmul_peak_gflops(dtype=torch.bfloat16)}


def timed(fn: Callable[[], Any], repeats: int) -> List[float]:
    """Wall seconds of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def flops(fn: Callable[[], Any]) -> float:
    """GFLOP of one call of ``fn`` (matmuls and convolutions, forward + backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def train_step(model: torch.nn.Module, objective: Callable, batch: Dict[str, Any], bf16: bool = False
               ) -> Callable[[], None]:
    """A closure running forward + backward + AdamW on ``batch`` (forward under bf16 autocast with ``bf16``, as
    ``train.mixed_precision bf16``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = objective(model, batch)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
    return step


def step_row(stage: str, name: str, step: Callable[[], None], images: int, peak: float, repeats: int,
             **extra: Any) -> Dict[str, Any]:
    """Best-of-``repeats`` seconds per step after one warm-up (which also counts the FLOPs)."""
    gflop = flops(step)
    times = timed(step, repeats)
    seconds = min(times)
    return {"stage": stage, "name": name, "seconds": seconds, "median_seconds": statistics.median(times),
            "gflop": gflop, "per_s": images / seconds, "unit": "images/s" if images > 1 else "steps/s",
            "achieved_gflops": gflop / seconds, "fraction_of_fp32_peak": gflop / seconds / peak, **extra}


def pretrain_batch(source: str, size: int, batch: int, frames: int, refs: int, rounds: int = 3):
    """A batch of real clips of ``source`` (augmentation on) with random soft pseudo-masks, and the mean seconds
    the data of one batch took (decode + sample + augment, 0 workers, ``rounds`` batches after a warm-up item)."""
    from torch.utils.data import default_collate

    from selfvos.data.augment import ClipAugment
    from selfvos.data.sampling import ClipDataset, ClipSamplerConfig
    from selfvos.data.sources import open_source

    cfg = ClipSamplerConfig(num_frames=frames, max_skip=3, num_refs=refs, size=(size, size), seed=0)
    collection = open_source(source.replace("../shared/data", str(SHARED)), max_side=480)
    dataset = ClipDataset(collection, cfg, augment=ClipAugment(), clips_per_video=rounds * batch)
    dataset[0]  # imports and first-use set-up are not what the loop sees per batch
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:rounds * batch].tolist()
    start = time.perf_counter()
    items = [dataset[i] for i in order]  # shuffled, as the trainer reads them
    data_seconds = (time.perf_counter() - start) / rounds
    out = default_collate(items[:batch])
    g = torch.Generator().manual_seed(0)
    b, t, _, h, w = out["frames"].shape
    out["pseudo_masks"] = torch.rand(b, t, 1, h, w, generator=g)
    out["mask_valid"] = torch.ones(b, t, dtype=torch.bool)
    refs_t = out["refs"]
    out["refs"] = torch.nn.functional.interpolate(refs_t.flatten(0, 1), size=(size // 2, size // 2), mode="bilinear",
                                                  align_corners=False).view(b, refs, 3, size // 2, size // 2)
    out["ref_masks"] = torch.rand(b, refs, 1, size // 2, size // 2, generator=g)
    out["ref_valid"] = torch.ones(b, refs, dtype=torch.bool)
    return out, data_seconds


def stage_pretrain(args: argparse.Namespace, peak: Dict[str, float]) -> List[Dict[str, Any]]:
    from selfvos.backbones import BackboneConfig
    from selfvos.pretrain import MuGConfig, MuGModel, MuGObjective
    from selfvos.pretrain.objective import ObjectiveConfig

    rows = []
    for size in args.sizes:
        images = args.batch * 3
        for source in args.data_sources[1:]:  # other sources: data rows only
            data_s = pretrain_batch(source, size, args.batch, 3, 2)[1]
            rows.append({"stage": "pretrain", "name": f"data {size}px {source.split(':')[0]}", "seconds": data_s,
                         "per_s": images / data_s, "unit": "images/s", "size": size, "source": source})
        batch, data_s = pretrain_batch(args.data_sources[0], size, args.batch, 3, 2)
        rows.append({"stage": "pretrain", "name": f"data {size}px {args.data_sources[0].split(':')[0]}",
                     "seconds": data_s, "per_s": images / data_s, "unit": "images/s", "size": size,
                     "source": args.data_sources[0]})
        for term in (*GRANULARITIES, "all", "all bf16"):
            torch.manual_seed(0)
            model = MuGModel(MuGConfig(backbone=BackboneConfig(name="resnet18", output_stride=8,
                                                               return_layers=("layer3",))))
            switches = {g: (term in (g, "all", "all bf16")) for g in GRANULARITIES}
            objective = MuGObjective(ObjectiveConfig(**switches))
            row = step_row("pretrain", f"{term} {size}px", train_step(model, objective, batch,
                                                                     bf16=term.endswith("bf16")),
                           images, peak["float32"], args.repeats, size=size, granularity=term)
            rows.append(row)
            if term.startswith("all"):  # what a 2-core machine runs per step: the data, then every objective
                whole = row["seconds"] + data_s
                rows.append({"stage": "pretrain", "name": f"whole step {size}px{term[3:]}", "seconds": whole,
                             "gflop": row["gflop"], "per_s": images / whole, "unit": "images/s", "size": size,
                             "achieved_gflops": row["gflop"] / whole,
                             "fraction_of_fp32_peak": row["gflop"] / whole / peak["float32"],
                             "target": TARGETS["whole pretraining step at 256 px, fraction of fp32 peak"]
                             if size == 256 and term == "all" else None})
    return rows


def recipe_config(head: str):
    """The FinetuneConfig of ``recipes/configs/finetune/<head>_*.yaml``, its data under ``SHARED``."""
    import dataclasses

    from selfvos.cli.recipes import resolve
    from selfvos.finetune.config import FinetuneConfig, head_clip_config

    stem = "rvos_zs_davis17" if head == "rvos_zs" else ("masktrack_davis17" if head == "masktrack" else
                                                         f"{head}_davis16")
    cfg = resolve(FinetuneConfig, str(REPO / "recipes" / "configs" / "finetune" / f"{stem}.yaml"), {}, [])
    sources = [s.replace("../shared/data", str(SHARED)) for s in cfg.data.sources]
    clip = head_clip_config(cfg.model, cfg.data.clip)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, sources=sources, clip=clip))


def head_recipe(head: str):
    """(FinetuneConfig, model, loss, one real batch, its data seconds) of ``recipes/configs/finetune/<head>_*.yaml``."""
    from selfvos.data.supervised import SupervisedClipDataset, collate_objects
    from selfvos.engine.trainer import freeze_batchnorm
    from selfvos.finetune.losses import SegmentationLoss
    from selfvos.finetune.recipe import head_architecture, open_videos
    from selfvos.registry import create_model

    cfg = recipe_config(head)
    train_videos, _ = open_videos(cfg)
    dataset = SupervisedClipDataset(train_videos, cfg.data.clip, clips_per_video=1)
    start = time.perf_counter()
    batch = collate_objects([dataset[i] for i in range(cfg.train.batch_size)])
    data_seconds = time.perf_counter() - start
    torch.manual_seed(0)
    model = create_model(head_architecture(cfg), cfg.model)
    model.train()
    if cfg.train.freeze_bn:
        freeze_batchnorm(model)
    return cfg, model, SegmentationLoss(cfg.loss), batch, data_seconds


def stage_finetune(args: argparse.Namespace, peak: Dict[str, float]) -> List[Dict[str, Any]]:
    rows = []
    for head in args.heads:
        cfg, model, loss, batch, data_s = head_recipe(head)
        row = step_row("finetune", head, train_step(model, loss, batch), 1, peak["float32"], args.repeats,
                       batch=cfg.train.batch_size, clip=list(cfg.data.clip.size), frames=cfg.data.clip.num_frames,
                       data_seconds=data_s)
        rows.append(row)
        print(f"  finetune {head}: {row['per_s']:.2f} steps/s", flush=True)
    return rows


def inference_models(args: argparse.Namespace):
    """(name, task, model, max_side, weights) of every inference core measured."""
    import selfvos
    from selfvos.finetune.recipe import head_architecture
    from selfvos.registry import create_model

    mug = REPO / "runs" / "mug_davis16_cpu" / "model"
    base = selfvos.from_pretrained(str(mug)) if mug.is_dir() else None
    if base is not None:
        yield "label propagation (MuG)", "one-shot", base, None, str(mug.relative_to(REPO))
        yield "label-free pipeline (MuG)", "zero-shot", base, None, str(mug.relative_to(REPO))
    for task, heads in (("one-shot", ONE_SHOT_HEADS), ("zero-shot", ZERO_SHOT_HEADS)):
        for head in (h for h in heads if h in args.heads):
            run = REPO / "runs" / f"finetune_{head}_mug" / "best"
            if run.is_dir():
                yield head, task, selfvos.from_pretrained(str(run)), args.head_max_side, str(run.relative_to(REPO))
            else:
                cfg = recipe_config(head)
                model = create_model(head_architecture(cfg), cfg.model)
                yield head, task, model.eval(), args.head_max_side, "random"


def stage_inference(args: argparse.Namespace, peak: Dict[str, float]) -> List[Dict[str, Any]]:
    import selfvos
    from selfvos.data.sources import open_source

    video = next(v for v in open_source(f"davis:{VAL_DEV}") if v.name == args.sequence)
    first = video.mask(0)
    rows = []
    for name, task, model, max_side, weights in inference_models(args):
        segmenter = selfvos.Segmenter(model, task, max_side=max_side)
        list(segmenter.segment_video(video, first if task == "one-shot" else None, progress=False))  # warm-up
        start = time.perf_counter()
        ids = list(segmenter.segment_video(video, first if task == "one-shot" else None, progress=False))
        seconds = time.perf_counter() - start
        target = TARGETS["zero-shot fps"] if task == "zero-shot" else (
            TARGETS["one-shot label propagation fps"] if name.startswith("label propagation") else None)
        rows.append({"stage": "inference", "name": f"{task} {name}", "task": task, "per_s": len(ids) / seconds,
                     "unit": "frames/s", "seconds": seconds / len(ids), "max_side": max_side, "weights": weights,
                     "size": list(ids[0].shape), "target": target})
        print(f"  {task} {name}: {len(ids) / seconds:.2f} frames/s", flush=True)
    return rows


def stage_memory(args: argparse.Namespace, peak: Dict[str, float]) -> List[Dict[str, Any]]:
    cores = [("label propagation (MuG)", REPO / "runs" / "mug_davis16_cpu" / "model")]
    cores += [(h, REPO / "runs" / f"finetune_{h}_mug" / "best") for h in ONE_SHOT_HEADS]
    rows = []
    for name, checkpoint in cores:
        if not checkpoint.is_dir():
            print(f"  memory {name}: {checkpoint} missing, skipped", flush=True)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "memory.json"
            subprocess.run([sys.executable, str(REPO / "benchmarks" / "one_shot_memory.py"), "--checkpoint",
                            str(checkpoint), "--max-side", str(max(args.memory_size)), "--size",
                            *map(str, args.memory_size), "--lengths", str(args.memory_frames), "--speed-frames", "0",
                            "--threads", "1", "--output", str(out)], check=True, cwd=REPO, stderr=subprocess.DEVNULL)
            run = json.loads(out.read_text())["memory"][0]
        after = run["peak_rss_mib_after"]
        longest = max(after, key=int)
        rows.append({"stage": "memory", "name": name, "frames": run["frames"], "peak_rss_mib_after": after,
                     "ratio": after[longest] / after["100"], "per_s": 1.0 / run["seconds_per_frame"],
                     "unit": "frames/s", "frame_size": list(args.memory_size),
                     "target": TARGETS["memory 10k / 100 frames"]})
        print(f"  memory {name}: {after['100']:.0f} -> {after[longest]:.0f} MiB", flush=True)
    return rows


def stage_evaluator(args: argparse.Namespace, peak: Dict[str, float]) -> List[Dict[str, Any]]:
    pred, gt = SHARED / "oracle" / "osvos-masks", VAL_DEV / "Annotations" / "480p"
    if args.official_dir:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "eval_speed.json"
            subprocess.run([sys.executable, str(REPO / "benchmarks" / "eval_speed.py"), "--official-dir",
                            str(args.official_dir), "--out", str(out)], check=True, cwd=REPO)
            doc = json.loads(out.read_text())
        ours, official = min(doc["seconds"]["selfvos"]), min(doc["seconds"]["official"])
        return [{"stage": "evaluator", "name": "selfvos evaluate vs official", "seconds": ours,
                 "official_seconds": official, "speedup": official / ours, "unit": "s"}]
    with tempfile.TemporaryDirectory() as tmp:
        from eval_speed import _selfvos_command

        cmd = _selfvos_command(pred, gt, Path(tmp) / "scores.json")
        times = timed(lambda: subprocess.run(cmd, check=True, cwd=REPO, capture_output=True), 3)
    return [{"stage": "evaluator", "name": "selfvos evaluate (val-dev, 4 videos, whole process)",
             "seconds": min(times), "unit": "s", "official_seconds": None,
             "note": "official code not run: pass --official-dir (last comparison: eval_speed.json)"}]


STAGES = {"pretrain": stage_pretrain, "finetune": stage_finetune, "inference": stage_inference,
          "memory": stage_memory, "evaluator": stage_evaluator}


def table(doc: Dict[str, Any]) -> str:
    lines = [f"fp32 matmul peak {doc['peak_before']['float32']:.0f} GFLOP/s, bf16 {doc['peak_before']['bfloat16']:.0f}"
             f" ({doc['machine']}, {doc['threads']} threads)",
             f"{'stage':10} {'name':40} {'rate':>10} {'unit':9} {'GFLOP':>7} {'% peak':>7} {'target':>7}"]
    for stage, info in doc["stages"].items():
        for r in info["rows"]:
            frac = r.get("fraction_of_fp32_peak")
            rate = r.get("per_s", r.get("seconds"))
            lines.append(f"{stage:10} {r['name'][:40]:40} {rate:>10.2f} {r['unit']:9} "
                         f"{r.get('gflop') or 0:>7.1f} {'' if frac is None else f'{100 * frac:.0f}%':>7} "
                         f"{'' if r.get('target') is None else r['target']:>7}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stages", nargs="+", choices=sorted(STAGES), default=["pretrain", "finetune", "inference",
                                                                           "evaluator"])
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="pretraining clip sizes (px)")
    p.add_argument("--batch", type=int, default=4, help="pretraining clips per step (the CPU recipe's)")
    p.add_argument("--data-sources", nargs="+", default=["davis:../shared/data/davis2016-train-240p",
                                                         "video:../shared/data/videos"],
                   help="pretraining data; the first feeds the timed steps (default: the CPU recipe's 240p JPEGs; "
                        "the mp4s decode H.264 up to 1280x720 at longest side 480)")
    p.add_argument("--repeats", type=int, default=3, help="timed steps per row (best of)")
    p.add_argument("--heads", nargs="+", default=[*ONE_SHOT_HEADS, *ZERO_SHOT_HEADS, "masktrack"],
                   help="heads of the finetune and inference stages")
    p.add_argument("--sequence", default="blackswan")
    p.add_argument("--head-max-side", type=int, default=320)
    p.add_argument("--memory-frames", type=int, default=10000)
    p.add_argument("--memory-size", type=int, nargs=2, default=[72, 128], metavar=("H", "W"))
    p.add_argument("--official-dir", type=Path, help="davis2017-evaluation checkout for the evaluator stage")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "speed.json")
    args = p.parse_args(argv)
    from selfvos.atomic import atomic_write_json

    if not VAL_DEV.is_dir():
        raise SystemExit(f"{SHARED}: the shared DAVIS data is needed (see ../shared/data/README.md)")
    torch.set_num_threads(args.threads)
    doc = json.loads(args.out.read_text()) if args.out.is_file() else {"stages": {}}
    doc.update(machine=platform.processor() or platform.machine(), torch=torch.__version__, threads=args.threads,
               targets=TARGETS, command="python benchmarks/speed.py " + " ".join(argv or sys.argv[1:]))
    for stage in args.stages:
        before = peaks()
        print(f"{stage}: fp32 peak {before['float32']:.0f} GFLOP/s", flush=True)
        rows = STAGES[stage](args, before)
        doc["stages"][stage] = {"peak_before": before, "peak_after": peaks(), "rows": rows,
                                "date": time.strftime("%Y-%m-%d %H:%M")}
        doc["peak_before"] = before
        atomic_write_json(args.out, doc)
    print(table(doc))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
