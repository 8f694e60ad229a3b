"""Wall time of selfvos's YouTube-VIS metric against the reference implementation, on the same synthetic set.

    python benchmarks/vis_eval_speed.py [--reference-dir DIR] [--videos 50 --frames 36 --instances 5] [--repeats 3]

The reference is ``ytvos.py`` + ``ytvoseval.py`` of the youtubevos fork of cocoapi (``PythonAPI/pycocotools``); it
cannot be vendored. It is taken from ``pycocotools.ytvos`` / ``pycocotools.ytvoseval`` when that fork is the
installed pycocotools, else from ``--reference-dir`` (a folder holding the two files, e.g. a checkout's
``PythonAPI/pycocotools``): they are copied to a temporary package whose ``mask`` is the installed
``pycocotools.mask``, with the two numpy-2 edits the code needs (``np.float`` -> ``np.float64``; an integer count
for ``np.linspace``), which change no value. Without a reference the script says so and times selfvos only.

Synthetic set (seeded): ``--videos`` videos of ``--frames`` frames (``--height`` x ``--width``), ``--instances``
ground-truth tracks each (moving ellipses, 10 categories, some entering late or leaving early), and
``--preds-per-video`` results per video: a jittered copy of every instance (its class, sometimes another) and
false positives, with random scores. Both files are written as JSON once; each timed run reads them, scores
them and summarises (reference: ``YTVOS`` + ``loadRes`` + ``evaluate`` + ``accumulate`` + ``summarize``;
selfvos: ``read_vis_gt`` + ``read_vis_results`` + ``evaluate_vis``, validation included). Runs alternate between
the two; the medians are compared, and so are the 12 summary numbers.

Writes ``benchmarks/results/vis_eval_speed.json`` and prints a table.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "vis_eval_speed.json"
N_CATEGORIES = 10


def synthetic_set(videos: int, frames: int, instances: int, preds_per_video: int, height: int, width: int,
                  seed: int = 0) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """(ground truth, results) of moving ellipses: an instance's mask at frame t is
    ``((x - cx_t) / a)^2 + ((y - cy_t) / b)^2 <= 1`` with a linear centre path; a result follows its instance
    with a jittered centre and radii."""
    from selfvos.eval.vis import encode_rle, frame_areas, frame_bboxes

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]

    def ellipse(cy: float, cx: float, b: float, a: float) -> np.ndarray:
        return (((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 <= 1).astype(np.uint8)

    def path(start: Tuple[float, ...], velocity: Tuple[float, ...], first: int, last: int, jitter: float = 0.0):
        segs = []
        for t in range(frames):
            if not first <= t <= last:
                segs.append(None)
                continue
            cy, cx, b, a = (s + v * t + rng.normal(0, jitter) for s, v in zip(start, velocity))
            mask = ellipse(cy, cx, max(b, 2.0), max(a, 2.0))
            segs.append(encode_rle(mask) if mask.any() else None)
        return segs

    video_list, annotations, results = [], [], []
    for v in range(1, videos + 1):
        video_list.append({"id": v, "height": height, "width": width, "length": frames,
                           "file_names": [f"v{v:04d}/{t:05d}.jpg" for t in range(frames)]})
        tracks = []
        for _ in range(instances):
            start = (rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width,
                     rng.uniform(0.05, 0.25) * height, rng.uniform(0.05, 0.25) * width)
            velocity = (rng.normal(0, height / 200), rng.normal(0, width / 200), 0.0, 0.0)
            first = int(rng.integers(0, frames // 4 + 1)) if rng.random() < 0.3 else 0
            last = int(rng.integers(3 * frames // 4, frames)) if rng.random() < 0.3 else frames - 1
            category = int(rng.integers(1, N_CATEGORIES + 1))
            segs = path(start, velocity, first, last)
            annotations.append({"id": len(annotations) + 1, "video_id": v, "category_id": category, "iscrowd": 0,
                                "segmentations": segs, "areas": frame_areas(segs), "bboxes": frame_bboxes(segs),
                                "height": height, "width": width, "length": frames})
            tracks.append((start, velocity, first, last, category))
        for k in range(preds_per_video):
            if k < len(tracks):
                start, velocity, first, last, category = tracks[k]
                if rng.random() < 0.2:
                    category = int(rng.integers(1, N_CATEGORIES + 1))
                segs = path(start, velocity, first, last, jitter=rng.uniform(0, 0.03) * min(height, width))
            else:
                start = (rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width,
                         rng.uniform(0.05, 0.2) * height, rng.uniform(0.05, 0.2) * width)
                segs = path(start, (0.0, 0.0, 0.0, 0.0), 0, frames - 1)
                category = int(rng.integers(1, N_CATEGORIES + 1))
            results.append({"video_id": v, "category_id": category, "score": float(rng.uniform(0.05, 1.0)),
                            "segmentations": segs})
    categories = [{"id": c, "name": f"class{c}", "supercategory": "object"} for c in range(1, N_CATEGORIES + 1)]
    return {"videos": video_list, "categories": categories, "annotations": annotations}, results


def load_reference(reference_dir: Optional[Path], work: Path) -> Tuple[Optional[Tuple[Any, Any]], str]:
    """((YTVOS, YTVOSeval), where from) or (None, why not)."""
    try:
        from pycocotools.ytvos import YTVOS  # the youtubevos fork installed as pycocotools
        from pycocotools.ytvoseval import YTVOSeval
        return (YTVOS, YTVOSeval), "pycocotools.ytvos / pycocotools.ytvoseval (installed fork)"
    except ImportError:
        pass
    if reference_dir is None:
        return None, ("reference not importable: pycocotools.ytvos is not installed (the youtubevos cocoapi fork) "
                      "and no --reference-dir was given")
    files = [reference_dir / "ytvos.py", reference_dir / "ytvoseval.py"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        return None, f"reference not importable: {', '.join(missing)} not found"
    package = work / "ytvos_reference"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mask.py").write_text("from pycocotools.mask import *  # noqa: F401,F403\n")
    for src in files:
        text = src.read_text()
        text = text.replace("dtype=np.float)", "dtype=np.float64)")  # np.float is gone from numpy >= 1.24
        for stop, step in (("0.95 - .5", ".05"), ("1.00 - .0", ".01")):  # numpy >= 1.18 wants an int count
            text = text.replace(f"np.round(({stop}) / {step}) + 1", f"int(np.round(({stop}) / {step})) + 1")
        (package / src.name).write_text(text)
    sys.path.insert(0, str(work))
    try:
        ytvos = importlib.import_module("ytvos_reference.ytvos")
        ytvoseval = importlib.import_module("ytvos_reference.ytvoseval")
    except Exception as err:  # any import failure means: time selfvos only
        return None, f"reference not importable from {reference_dir}: {type(err).__name__}: {err}"
    return (ytvos.YTVOS, ytvoseval.YTVOSeval), f"{reference_dir} (copied, numpy-2 edits)"


def run_reference(classes: Tuple[Any, Any], gt_path: Path, res_path: Path) -> np.ndarray:
    YTVOS, YTVOSeval = classes
    with contextlib.redirect_stdout(io.StringIO()):
        gt = YTVOS(str(gt_path))
        evaluator = YTVOSeval(gt, gt.loadRes(str(res_path)))
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats, dtype=np.float64)


def run_selfvos(gt_path: Path, res_path: Path) -> np.ndarray:
    from selfvos.eval.vis import STAT_NAMES, evaluate_vis, read_vis_gt, read_vis_results

    gt = read_vis_gt(gt_path)
    result = evaluate_vis(gt, read_vis_results(res_path, gt))
    return np.array([result.stats[k] for k in STAT_NAMES])


def timed(fn: Callable[[], np.ndarray]) -> Tuple[float, float, np.ndarray]:
    """(wall seconds, CPU seconds of this process, return value)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-dir", type=Path, default=None,
                        help="folder with ytvos.py and ytvoseval.py of the youtubevos cocoapi fork")
    parser.add_argument("--videos", type=int, default=50)
    parser.add_argument("--frames", type=int, default=36)
    parser.add_argument("--instances", type=int, default=5)
    parser.add_argument("--preds-per-video", type=int, default=10)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    from selfvos.atomic import atomic_write_json
    from selfvos.eval.vis import STAT_NAMES, write_vis_json

    work = Path(tempfile.mkdtemp(prefix="vis_eval_speed_"))
    try:
        gt, results = synthetic_set(args.videos, args.frames, args.instances, args.preds_per_video, args.height,
                                    args.width, args.seed)
        gt_path, res_path = write_vis_json(work / "gt.json", gt), write_vis_json(work / "results.json", results)
        reference, origin = load_reference(args.reference_dir, work)
        if reference is None:
            print(f"note: {origin}; timing selfvos only")
        load_before = os.getloadavg()[0]
        keys = (["reference"] if reference is not None else []) + ["selfvos"]
        times: Dict[str, List[float]] = {k: [] for k in keys}
        cpu: Dict[str, List[float]] = {k: [] for k in keys}
        stats: Dict[str, np.ndarray] = {}
        for _ in range(args.repeats):  # alternate so both see the same machine load
            if reference is not None:
                wall, cpu_s, stats["reference"] = timed(lambda: run_reference(reference, gt_path, res_path))
                times["reference"].append(wall)
                cpu["reference"].append(cpu_s)
            wall, cpu_s, stats["selfvos"] = timed(lambda: run_selfvos(gt_path, res_path))
            times["selfvos"].append(wall)
            cpu["selfvos"].append(cpu_s)
        load_after = os.getloadavg()[0]
        sizes = {"gt_json_bytes": gt_path.stat().st_size, "results_json_bytes": res_path.stat().st_size}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    doc: Dict[str, Any] = {
        "what": "wall time of reading + scoring + summarising a YouTube-VIS results file, reference ytvoseval vs "
                "selfvos.eval.vis (same process, alternating runs)",
        "data": {"videos": args.videos, "frames": args.frames, "instances_per_video": args.instances,
                 "predictions_per_video": args.preds_per_video, "height": args.height, "width": args.width,
                 "categories": N_CATEGORIES, "seed": args.seed, **sizes},
        "reference": origin,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
                    "load_avg_1min_before": load_before, "load_avg_1min_after": load_after},
        "seconds": times, "cpu_seconds": cpu, "median_s": med, "median_cpu_s": med_cpu,
        "stats": {k: dict(zip(STAT_NAMES, v.tolist())) for k, v in stats.items()},
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if reference is not None:
        diff = float(np.max(np.abs(stats["reference"] - stats["selfvos"])))
        doc.update(speedup=med["reference"] / med["selfvos"], cpu_speedup=med_cpu["reference"] / med_cpu["selfvos"],
                   max_abs_stat_difference=diff, same_numbers=diff <= 1e-6)
    atomic_write_json(args.out, doc, sort_keys=False, newline=True)

    print(f"{args.videos} videos x {args.frames} frames x {args.instances} instances ({args.height}x{args.width}), "
          f"{args.preds_per_video} results per video, {args.repeats} runs each, load {load_before:.1f} -> "
          f"{load_after:.1f} on {os.cpu_count()} cpus")
    print(f"{'evaluator':<10} {'median s':>9} {'min s':>7} {'CPU s':>7} {'AP':>7} {'AR1':>7} {'AR10':>7}")
    for key in times:
        s = dict(zip(STAT_NAMES, stats[key]))
        print(f"{key:<10} {med[key]:9.2f} {min(times[key]):7.2f} {med_cpu[key]:7.2f} {s['AP']:7.4f} "
              f"{s['AR1']:7.4f} {s['AR10']:7.4f}")
    if reference is not None:
        print(f"speedup {doc['speedup']:.2f}x (CPU {doc['cpu_speedup']:.2f}x), max |stat difference| "
              f"{doc['max_abs_stat_difference']:.2e}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
