"""Online fine-tuning on the first frame (OSVOS-style) before one-shot label propagation, on DAVIS-2016.

    python benchmarks/online_davis16.py --split train --vary steps=10,40 --vary lr=3e-5,3e-4
    python benchmarks/online_davis16.py --split val-dev

For each sequence the model (``--checkpoint``, default ``runs/mug_davis16_cpu/model``) is copied and fine-tuned
on the first frame and its human mask only (``selfvos.inference.online.finetune_on_frames``), then the copy
segments the sequence one-shot with the default ``OneShotConfig`` (label propagation) and the official protocol
scores it. Variants:
- ``one-shot (no online fine-tuning)``: the same scoring on the model as given (the baseline of the gains);
- ``online steps=.. lr=.. ...`` (the name spells out the settings): ``OnlineFinetuneConfig()``, changed by
  ``--base FIELD=V`` (repeatable);
- ``--vary FIELD=V1,V2`` (repeatable): one variant per value of one field, the others as in the first online
  variant (a one-at-a-time sweep; tuples such as ``parameters`` take ``a+b``, ``crop=none`` is None).
Splits: ``train`` = a handful of DAVIS-2016 train sequences (``--sequences``, default: five, 228 frames; where
the settings are chosen: 240p frames encoded at the default short side 480 like val), ``val-dev`` = the 4
sequences of davis2016-val-dev at 854x480 (reported, never used to choose). Rows accumulate in
``benchmarks/results/online_davis16.json`` under ``"<split>[/<tag>] | <variant>"`` (``--tag`` names another set
of train sequences) with the J&F per sequence, the gain over the baseline row of the same split (per sequence
and mean, when that row is there), the fine-tuning seconds per video, the first and last training losses, the
SHA-256 of the weights, the command and the date; a rerun replaces its own rows. Prints a table.
"""
from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from selfvos.eval.runner import (
    load_model,
    row_weights,
    run_variant,
    wanted,
    weights_sha256,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SPLITS = {"train": (SHARED / "davis2016-train-240p", SHARED / "davis2016-train-240p" / "Annotations"),
          "val-dev": (SHARED / "davis2016-val-dev", SHARED / "davis2016-val-dev" / "Annotations" / "480p")}
# short sequences of the one-in-three train subset of one_shot_train.json, plus two short ones
TRAIN_SEQUENCES = ("dance-jump", "dog-agility", "motocross-bumps", "rollerblade", "soccerball")
OUT = REPO / "benchmarks" / "results" / "online_davis16.json"
BASELINE = "one-shot (no online fine-tuning)"
TARGET = "online fine-tuning raises one-shot J&F on val-dev"
NOTE = ("seconds measured while other jobs shared the 2 cores; 'command' reproduces the row with the current script "
        "and defaults, 'command_as_run' (where present) is what ran before the defaults were set")
CHOICE = ("OnlineFinetuneConfig defaults chosen on DAVIS-2016 train only: rows 'train | ...' (the five default "
          "--sequences) and 'train/check | ...' (breakdance-flare, elephant, hockey, lucia, swing); val-dev scored "
          "once, after the choice, never used to choose")


def parse_value(kind: Any, text: str) -> Any:
    """One ``--vary`` / ``--base`` value of a field annotated ``kind`` (a string under postponed annotations)."""
    kind = str(kind)
    if text.lower() == "none":
        return None
    if kind.startswith("tuple"):
        return tuple(part for part in text.split("+") if part)
    if "float" in kind:
        return float(text)
    if "int" in kind:
        return int(text)
    return text


def changes(specs: list[str]) -> dict[str, list[Any]]:
    """``["steps=10,40", "lr=1e-4"]`` -> ``{"steps": [10, 40], "lr": [1e-4]}`` (fields of OnlineFinetuneConfig)."""
    from selfvos.inference.online import OnlineFinetuneConfig

    kinds = {f.name: f.type for f in dataclasses.fields(OnlineFinetuneConfig)}
    out: dict[str, list[Any]] = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        if not sep or name not in kinds:
            raise SystemExit(f"{spec!r}: expected FIELD=V1,V2 with FIELD one of {sorted(kinds)}")
        out[name] = [parse_value(kinds[name], v) for v in values.split(",")]
    return out


def describe(cfg: Any) -> str:
    """A variant name that spells out the settings: ``online steps=10 lr=0.0003 layers=layer3 view=256@480 ...``."""
    layers = "+".join(p.replace("backbone.", "") or "all" for p in cfg.parameters)
    view = f"{cfg.crop or 'frame'}@{cfg.short_side}"
    return (f"online steps={cfg.steps} lr={cfg.lr:g} layers={layers} view={view} batch={cfg.batch} "
            f"T={cfg.num_frames} jitter={cfg.jitter:g} seed={cfg.seed}")


def variants(base: dict[str, Any], vary: dict[str, list[Any]]) -> dict[str, Any]:
    """Variant name -> OnlineFinetuneConfig (None for the baseline without fine-tuning): the defaults changed by
    ``base``, then one variant per value of each ``vary`` field."""
    from selfvos.inference.online import OnlineFinetuneConfig

    default = OnlineFinetuneConfig(**base)
    configs = [default] + [dataclasses.replace(default, **{name: v}) for name, values in vary.items() for v in values]
    return {BASELINE: None, **{describe(cfg): cfg for cfg in configs}}


def score(model: Any, collection: Any, gt: Path, cfg: Any) -> dict[str, Any]:
    """One-shot scores of ``collection``, each video on a copy fine-tuned on its first frame (cfg None: on
    ``model``), with the fine-tuning seconds and first / last training losses per video."""
    import torch

    from selfvos.inference.one_shot import OneShotConfig
    from selfvos.inference.online import run_online_finetune

    one_shot = OneShotConfig()
    losses: dict[str, tuple] = {}

    def model_for(video: Any, first: Any) -> Any:
        result = run_online_finetune(model, [video.frame(0)], [first], cfg)
        losses[video.name] = (result.losses[:3], result.losses[-3:])
        return result.model

    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        scores = run_variant(model, collection, "one-shot", Path(tmp) / "pred", gt_dir=gt, one_shot=one_shot,
                             model_for=model_for if cfg is not None else None)
    if cfg is not None:
        seconds = scores.pop("model_for_s")
        scores.update(online_s_per_video=sum(seconds.values()) / len(seconds), online_s=seconds,
                      train_loss_first_last=losses, config=dataclasses.asdict(cfg))
    return scores


def add_gains(report: dict[str, Any], split: str) -> None:
    """Gain in J&F of every online row of ``split`` over its baseline row (per sequence and mean)."""
    rows = report["results"]
    base = rows.get(f"{split} | {BASELINE}")
    if base is None:
        return
    for key, row in rows.items():
        if key.startswith(f"{split} | ") and "online_s" in row:
            row["gain_JF"] = row["J&F"] - base["J&F"]
            row["gain_per_sequence_JF"] = {s: v - base["per_sequence_JF"][s] for s, v in row["per_sequence_JF"].items()
                                           if s in base["per_sequence_JF"]}


def print_rows(report: dict[str, Any]) -> None:
    """variant, J&F, gain, s/video, then the gain of every sequence."""
    rows = report["results"]
    width = max([40, *map(len, rows)])
    print(f"\n{'split | variant':<{width}} {'J&F':>6} {'gain':>6} {'s/video':>8}  per-sequence J&F (gain)")
    for key, row in rows.items():
        gain = f"{row['gain_JF']:+6.1f}" if "gain_JF" in row else f"{'-':>6}"
        seconds = f"{row['online_s_per_video']:8.1f}" if "online_s_per_video" in row else f"{'-':>8}"
        per = row.get("gain_per_sequence_JF", {})
        detail = ", ".join(f"{s} {v:.1f}" + (f" ({per[s]:+.1f})" if s in per else "")
                           for s, v in row["per_sequence_JF"].items())
        print(f"{key:<{width}} {row['J&F']:6.1f} {gain} {seconds}  {detail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/mug_davis16_cpu/model")
    parser.add_argument("--split", choices=sorted(SPLITS), default="val-dev")
    parser.add_argument("--sequences", default=",".join(TRAIN_SEQUENCES),
                        help="comma-separated train sequences (split train only)")
    parser.add_argument("--base", action="append", default=[], metavar="FIELD=V",
                        help="OnlineFinetuneConfig change of every online variant (repeatable)")
    parser.add_argument("--vary", action="append", default=[], metavar="FIELD=V1,V2",
                        help="one online variant per value (repeatable)")
    parser.add_argument("--tag", default="", help="row prefix '<split>/<tag>' (another set of train sequences)")
    parser.add_argument("--only", default="", help="comma-separated substrings of variant names to run")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    data, gt = SPLITS[args.split]
    if not data.is_dir():
        print(f"skipped: {data} not found", file=sys.stderr)
        return 0
    import json

    import torch

    from selfvos.atomic import atomic_write_json
    from selfvos.data.sources import open_source
    from selfvos.data.video import VideoCollection

    torch.set_num_threads(2)
    collection = open_source(f"davis:{data}")
    if args.split == "train":
        keep = [s for s in args.sequences.split(",") if s]
        collection = VideoCollection([v for v in collection if v.name in keep], source=collection.source)
    base = {name: values[0] for name, values in changes(args.base).items()}
    chosen = {k: v for k, v in variants(base, changes(args.vary)).items() if wanted(k, args.only)}
    split = f"{args.split}/{args.tag}" if args.tag else args.split
    out = Path(args.out)
    command = "python benchmarks/online_davis16.py " + " ".join(
        f'"{a}"' if " " in a else a for a in (argv if argv is not None else sys.argv[1:]))
    report = json.loads(out.read_text()) if out.is_file() else {"results": {}}
    model, digest = load_model(args.checkpoint), weights_sha256(args.checkpoint)
    for variant, cfg in chosen.items():
        scores = score(model, collection, gt, cfg)
        key = f"{split} | {variant}"
        report["results"][key] = {**scores, **row_weights("one-shot", digest), "checkpoint": args.checkpoint,
                                  "sequences": collection.names, "command": command,
                                  "date": time.strftime("%Y-%m-%d")}
        add_gains(report, split)
        report["_about"] = {"splits": {s: SPLITS[s][0].name for s in SPLITS}, "target": TARGET, "choice": CHOICE,
                            "machine": platform.platform(), "threads": 2,
                            "note": NOTE}
        atomic_write_json(out, report, sort_keys=False)  # after every row: a stopped run keeps what it measured
        print(f"{key:<60} J&F {scores['J&F']:5.1f}", flush=True)
    print_rows(report)
    print(f"target: {TARGET}\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
