"""First-frame masks from a box prompt, and one-shot VOS started from them, on DAVIS-2016.

    python benchmarks/prompts_davis16.py                                   # first-frame J + one-shot on val-dev
    python benchmarks/prompts_davis16.py --parts first-frame --splits train --vary margin=0.25,0.5

The prompt of each sequence is the tight box of its human first-frame mask (``(xmin, ymin, xmax + 1, ymax + 1)``
per object). Two measurements:

- ``first-frame``: J (region IoU) of the mask made from the box against the human mask, mean over the objects
  of a sequence, then over the sequences; on ``train`` (the 30 sequences of davis2016-train-240p, where every
  setting of :class:`~selfvos.inference.prompts.PromptConfig` was chosen) and ``val-dev`` (the 4 sequences of
  davis2016-val-dev at 854x480, never used to choose). Rows (the ablation): ``GrabCut (OpenCV, box)``,
  OpenCV's own GrabCut from the box (5 iterations); ``colour graph cut``, :func:`mask_from_prompts` without a
  model; ``+ frame head``, the default (the model's frame-head probability joins the colour model);
  ``+ frame head + features``, also the backbone feature similarity (``feature_weight`` 0.5); ``--vary
  KEY=V1,V2`` adds a row of the default with one setting changed for each value.
- ``one-shot``: J&F (official protocol) on val-dev of label propagation (the default ``OneShotConfig``)
  started from the box mask against the same run started from the human mask.

Targets: box first-frame J >= 0.85 on train and val-dev; one-shot J&F from the box within 3 points of the
human mask's. Rows accumulate in ``benchmarks/results/prompts_davis16.json`` under ``"<part> | <split> |
<variant>"``, each with the SHA-256 of the weights it was measured on (None for the model-free rows), the
command and the date; a rerun replaces its own rows.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SPLITS = {"train": (SHARED / "davis2016-train-240p", SHARED / "davis2016-train-240p" / "Annotations"),
          "val-dev": (SHARED / "davis2016-val-dev", SHARED / "davis2016-val-dev" / "Annotations" / "480p")}
OUT = REPO / "benchmarks" / "results" / "prompts_davis16.json"
DEFAULT_CHECKPOINT = "runs/mug_davis16_cpu/model"
TARGETS = {"first-frame J from the box, train and val-dev": 0.85,
           "one-shot J&F from the box: at most this many points under the human mask's": 3.0}


def tight_boxes(mask: np.ndarray) -> List[tuple]:
    """(H, W) ids -> the tight box ``(xmin, ymin, xmax + 1, ymax + 1)`` of every object id, in id order."""
    boxes = []
    for object_id in [int(i) for i in np.unique(mask) if i not in (0, 255)]:
        rows, cols = np.nonzero(mask == object_id)
        boxes.append((int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1))
    return boxes


def object_ids(mask: np.ndarray) -> List[int]:
    return [int(i) for i in np.unique(mask) if i not in (0, 255)]


def mean_object_j(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Mean over the objects of ``truth`` (ids in order, prediction id k = k-th object) of the region IoU."""
    from selfvos.eval.davis import jaccard

    return float(np.mean([jaccard(prediction == k + 1, truth == object_id)
                          for k, object_id in enumerate(object_ids(truth))]))


def opencv_grabcut(frame: np.ndarray, boxes: List[tuple]) -> np.ndarray:
    """OpenCV's GrabCut from each box (5 iterations, fixed seed), later objects drawn over earlier ones."""
    import cv2

    ids = np.zeros(frame.shape[:2], np.uint8)
    bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        labels = np.zeros(frame.shape[:2], np.uint8)
        cv2.setRNGSeed(0)
        cv2.grabCut(bgr, labels, (x0, y0, x1 - x0, y1 - y0), np.zeros((1, 65)), np.zeros((1, 65)), 5,
                    cv2.GC_INIT_WITH_RECT)
        ids[(labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)] = k + 1
    return ids


def first_frame_variants(model: Any, vary: Dict[str, List[str]]) -> Dict[str, tuple]:
    """Variant -> (function frame, boxes -> ids, uses the model)."""
    from selfvos.inference.prompts import PromptConfig, mask_from_prompts

    def prompted(cfg: PromptConfig, with_model: bool) -> Callable:
        return lambda frame, boxes: mask_from_prompts(frame, boxes=boxes, model=model if with_model else None,
                                                      cfg=cfg)

    variants = {"GrabCut (OpenCV, box)": (opencv_grabcut, False),
                "colour graph cut": (prompted(PromptConfig(head_weight=0.0), False), False),
                "+ frame head": (prompted(PromptConfig(), True), True),
                "+ frame head + features": (prompted(PromptConfig(feature_weight=0.5), True), True)}
    fields = {f.name: f.type for f in dataclasses.fields(PromptConfig)}
    for key, values in vary.items():
        if key not in fields:
            raise SystemExit(f"--vary {key}: not a PromptConfig field ({', '.join(fields)})")
        default = getattr(PromptConfig(), key)
        for text in values:
            value = type(default)(float(text)) if not isinstance(default, bool) else text.lower() == "true"
            variants[f"+ frame head, {key}={value}"] = (prompted(PromptConfig(**{key: value}), True), True)
    return variants


def score_first_frames(data: Path, variant: Callable) -> Dict[str, Any]:
    """Mean first-frame J (over objects, then sequences) of ``variant`` from the tight boxes, per sequence too."""
    from selfvos.data.sources import open_source
    from selfvos.data.video import first_frame_mask

    per_sequence, start = {}, time.perf_counter()
    for video in open_source(f"davis:{data}"):
        truth = first_frame_mask(video)
        per_sequence[video.name] = mean_object_j(variant(video.frame(0), tight_boxes(truth)), truth)
    seconds = time.perf_counter() - start
    return {"J": float(np.mean(list(per_sequence.values()))), "seconds_per_frame": seconds / len(per_sequence),
            "per_sequence_J": per_sequence}


def box_first_mask(model: Any) -> Callable:
    """``video -> ids`` made by the default :func:`mask_from_prompts` from the tight boxes of the human mask."""
    from selfvos.data.video import first_frame_mask
    from selfvos.inference.prompts import mask_from_prompts

    def make(video: Any) -> np.ndarray:
        return mask_from_prompts(video.frame(0), boxes=tight_boxes(first_frame_mask(video)), model=model)

    return make


def parse_vary(items: List[str]) -> Dict[str, List[str]]:
    vary = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise SystemExit(f"--vary {item!r}: expected KEY=V1,V2")
        vary[key] = values.split(",")
    return vary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="the pretrained model (default: %(default)s)")
    parser.add_argument("--parts", default="first-frame,one-shot", help="comma-separated: first-frame, one-shot")
    parser.add_argument("--splits", default="train,val-dev", help="first-frame splits: train, val-dev")
    parser.add_argument("--variants", default="", help="first-frame variants to run (substrings; default all)")
    parser.add_argument("--vary", action="append", default=[], metavar="KEY=V1,V2",
                        help="first-frame rows of the default with one PromptConfig setting changed (repeatable)")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    parts, splits = [p for p in args.parts.split(",") if p], [s for s in args.splits.split(",") if s]
    missing = [str(SPLITS[s][0]) for s in {*splits, "val-dev"} if not SPLITS[s][0].is_dir()]
    if missing:
        print(f"skipped: {', '.join(missing)} not found", file=sys.stderr)
        return 0
    import torch

    from selfvos.atomic import atomic_write_json
    from selfvos.eval.runner import load_model, print_table, run_variant, wanted, weights_sha256

    torch.set_num_threads(2)
    checkpoint = str(REPO / args.checkpoint) if not Path(args.checkpoint).is_absolute() else args.checkpoint
    model, digest = load_model(checkpoint), weights_sha256(checkpoint)
    out = Path(args.out)
    command = "python benchmarks/prompts_davis16.py " + " ".join(
        f'"{a}"' if " " in a else a for a in (argv if argv is not None else sys.argv[1:]))
    report = json.loads(out.read_text()) if out.is_file() else {"results": {}}
    meta = {"checkpoint": args.checkpoint, "command": command, "date": time.strftime("%Y-%m-%d")}

    def record(key: str, row: Dict[str, Any], with_model: bool) -> None:
        report["results"][key] = {**row, "weights_sha256": digest if with_model else None, **meta}
        report["_about"] = {"splits": {s: SPLITS[s][0].name for s in SPLITS}, "targets": TARGETS,
                            "prompt": "tight box of each object's human first-frame mask",
                            "machine": platform.platform()}
        atomic_write_json(out, report, sort_keys=False)  # after every row: a stopped run keeps what it measured

    if "first-frame" in parts:
        for name, (variant, with_model) in first_frame_variants(model, parse_vary(args.vary)).items():
            if not wanted(name, args.variants):
                continue
            for split in splits:
                with torch.inference_mode():
                    row = score_first_frames(SPLITS[split][0], variant)
                key = f"first-frame | {split} | {name}"
                record(key, row, with_model)
                print(f"{key:<64} J {row['J']:.3f}  ({row['seconds_per_frame']:.2f} s/frame)", flush=True)
    if "one-shot" in parts:
        from selfvos.data.sources import open_source
        from selfvos.inference.one_shot import OneShotConfig

        data, gt = SPLITS["val-dev"]
        for name, first in (("human first-frame mask", None), ("box first-frame mask", box_first_mask(model))):
            with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
                scores = run_variant(model, open_source(f"davis:{data}"), "one-shot", Path(tmp) / "pred", gt_dir=gt,
                                     first_mask=first, one_shot=OneShotConfig())
            key = f"one-shot | val-dev | {name}"
            record(key, scores, True)
            print(f"{key:<64} J&F {scores['J&F']:5.1f}", flush=True)
    print_first_frame_table(report["results"])
    one_shot = {k: v for k, v in report["results"].items() if k.startswith("one-shot")}
    if one_shot:
        print_table(one_shot, min_width=64)
    print(f"targets: {TARGETS}\nwrote {out}")
    return 0


def print_first_frame_table(results: Dict[str, Dict[str, Any]]) -> None:
    """One row per first-frame variant, one J column per split."""
    rows: Dict[str, Dict[str, float]] = {}
    for key, row in results.items():
        part, split, name = key.split(" | ")
        if part == "first-frame":
            rows.setdefault(name, {})[split] = row["J"]
    if not rows:
        return
    width = max(map(len, rows))
    print(f"\n{'first-frame J from the box':<{width}} {'train':>7} {'val-dev':>8}")
    for name, js in rows.items():
        cells = [f"{js[s]:.3f}" if s in js else "-" for s in ("train", "val-dev")]
        print(f"{name:<{width}} {cells[0]:>7} {cells[1]:>8}")


if __name__ == "__main__":
    sys.exit(main())
