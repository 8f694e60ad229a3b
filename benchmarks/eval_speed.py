"""Wall time of the whole ``selfvos evaluate`` process against the official DAVIS evaluation code, same masks.

The official code (``davisvideochallenge/davis2017-evaluation``) cannot be vendored: pass a checkout with
``--official-dir``. A small driver (below) reproduces its pipeline in a subprocess: ``DAVIS`` reads every GT
frame into a float64 stack, ``Results.read_masks`` reads the scored predictions, then ``db_eval_iou`` /
``db_eval_boundary`` per sequence and ``db_statistics`` (DAVIS-2016 binary rule: value > 0 is foreground,
frames 1..N-2). Both processes are timed from start to exit, alternately, and their numbers are compared.

    python benchmarks/eval_speed.py --official-dir /tmp/davis2017-evaluation [--repeats 3]

Writes ``benchmarks/results/eval_speed.json`` and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SELFVOS_SHARED_DATA", REPO.parent / "shared" / "data"))
KEYS = ("J", "F", "J_recall", "J_decay", "F_recall", "F_decay")

OFFICIAL_DRIVER = r'''
import json, sys
from pathlib import Path
import numpy as np
from PIL import Image
sys.path.insert(0, sys.argv[1])
from davis2017.metrics import db_eval_boundary, db_eval_iou
from davis2017.utils import db_statistics

pred_dir, gt_dir, out_path = Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
doc, js, fs = {"sequences": {}}, [], []
for seq in sorted(p.name for p in gt_dir.iterdir() if p.is_dir()):
    files = sorted((gt_dir / seq).glob("*.png"))
    first = np.array(Image.open(files[0]))
    gt = np.zeros((len(files), *first.shape))             # as DAVIS._get_all_elements
    for i, f in enumerate(files):
        gt[i] = np.array(Image.open(f))
    gt, ids = gt[None, 1:-1] > 0, [f.stem for f in files][1:-1]  # semi-supervised slice, 2016 rule
    res = np.zeros((len(ids), *first.shape))              # as Results.read_masks
    for i, m in enumerate(ids):
        res[i] = np.array(Image.open(pred_dir / seq / f"{m}.png"))
    res = res[None] > 0
    void = gt[0] == 255                                   # as _evaluate_semisupervised
    j = db_eval_iou(gt[0], res[0], void)
    f = db_eval_boundary(gt[0], res[0], void)
    (jm, jr, jd), (fm, fr, fd) = db_statistics(j), db_statistics(f)
    doc["sequences"][seq] = dict(J=jm, F=fm, J_recall=jr, J_decay=jd, F_recall=fr, F_decay=fd)
    js.append(jm)
    fs.append(fm)
doc["mean"] = {"J": float(np.mean(js)), "F": float(np.mean(fs)), "JF": float(np.mean(js) + np.mean(fs)) / 2}
Path(out_path).write_text(json.dumps(doc, default=float))
'''


def _selfvos_command(pred: Path, gt: Path, out: Path) -> list:
    script = shutil.which("selfvos", path=str(Path(sys.executable).parent)) or shutil.which("selfvos")
    launcher = [script] if script else [sys.executable, "-c", "import sys; from selfvos.cli import main; sys.exit(main())"]
    return launcher + ["evaluate", "--pred", str(pred), "--gt", str(gt), "--json", str(out)]


def _timed(cmd: list) -> tuple:
    """(wall seconds, CPU seconds user+sys of the process and its waited-for children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _max_difference(ours: dict, official: dict) -> float:
    assert sorted(ours["sequences"]) == sorted(official["sequences"]), "different sequences scored"
    diffs = [abs(ours["sequences"][s][k] - official["sequences"][s][k]) for s in ours["sequences"] for k in KEYS]
    diffs += [abs(ours["mean"][k] - official["mean"][k]) for k in ("J", "F", "JF")]
    return max(diffs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-dir", required=True, type=Path, help="checkout of davis2017-evaluation")
    parser.add_argument("--pred", type=Path, default=SHARED / "oracle" / "osvos-masks")
    parser.add_argument("--gt", type=Path, default=SHARED / "davis2016-val-dev" / "Annotations" / "480p")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "eval_speed.json")
    args = parser.parse_args()
    if not (args.official_dir / "davis2017" / "metrics.py").is_file():
        raise SystemExit(f"{args.official_dir}: no davis2017/metrics.py (pass a davis2017-evaluation checkout)")
    if not args.gt.is_dir() or not args.pred.is_dir():
        print(f"skipped: data not found ({args.gt}, {args.pred})")
        return 0

    sequences = sorted(p.name for p in args.gt.iterdir() if p.is_dir())
    n_frames = sum(len(list((args.gt / s).glob("*.png"))) for s in sequences)
    with tempfile.TemporaryDirectory() as tmp:
        driver, ours_json, official_json = Path(tmp) / "driver.py", Path(tmp) / "ours.json", Path(tmp) / "off.json"
        driver.write_text(OFFICIAL_DRIVER)
        ours_cmd = _selfvos_command(args.pred, args.gt, ours_json)
        official_cmd = [sys.executable, str(driver), str(args.official_dir), str(args.pred), str(args.gt),
                        str(official_json)]
        load_before = os.getloadavg()[0]
        times = {"selfvos": [], "official": []}
        cpu = {"selfvos": [], "official": []}
        for _ in range(args.repeats):  # alternate so both see the same machine load
            for key, cmd in (("official", official_cmd), ("selfvos", ours_cmd)):
                wall, cpu_s = _timed(cmd)
                times[key].append(wall)
                cpu[key].append(cpu_s)
        load_after = os.getloadavg()[0]
        ours, official = json.loads(ours_json.read_text()), json.loads(official_json.read_text())

    max_diff = _max_difference(ours, official)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    result = {
        "what": "wall time of the whole evaluation process (start to exit), official DAVIS code vs selfvos evaluate",
        "data": {"pred": os.path.relpath(args.pred, REPO), "gt": os.path.relpath(args.gt, REPO), "sequences": sequences, "frames": n_frames,
                 "scored_frames": n_frames - 2 * len(sequences)},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_1min_before": load_before, "load_avg_1min_after": load_after},
        "seconds": times,
        "cpu_seconds": cpu,
        "median_s": med,
        "median_cpu_s": med_cpu,
        "frames_per_s": {k: n_frames / v for k, v in med.items()},
        "speedup": med["official"] / med["selfvos"],
        "cpu_speedup": med_cpu["official"] / med_cpu["selfvos"],
        "max_abs_score_difference": max_diff,
        "same_numbers": max_diff <= 1e-9,
        "mean": {"selfvos": ours["mean"], "official": official["mean"]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"{len(sequences)} sequences, {n_frames} frames ({result['data']['scored_frames']} scored), "
          f"{args.repeats} runs each, load {load_before:.1f} -> {load_after:.1f} on {os.cpu_count()} cpus")
    print(f"{'evaluator':<10} {'median s':>9} {'min s':>7} {'CPU s':>7} {'frames/s':>9} {'J&F':>8}")
    for name, key in (("official", "official"), ("selfvos", "selfvos")):
        doc = official if key == "official" else ours
        print(f"{name:<10} {med[key]:>9.2f} {min(times[key]):>7.2f} {med_cpu[key]:>7.2f} "
              f"{result['frames_per_s'][key]:>9.1f} "
              f"{doc['mean']['JF']:>8.4f}")
    print(f"speed-up {result['speedup']:.1f}x wall, {result['cpu_speedup']:.1f}x CPU; max |score difference| {max_diff:.2e} "
          f"({'same numbers' if result['same_numbers'] else 'NUMBERS DIFFER'})")
    print(f"wrote {args.out}")
    return 0 if result["same_numbers"] else 1


if __name__ == "__main__":
    sys.exit(main())
