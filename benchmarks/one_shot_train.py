"""One-shot settings on DAVIS-2016 *train* (every 3rd sequence, all frames): where the one-shot defaults were
chosen. The human masks of train are used only to choose settings, never to train.

    python benchmarks/one_shot_train.py --checkpoint runs/mug_davis16_cpu/model

Variants: the default ``OneShotConfig`` (guided-filter refinement r 16, eps 1e-5) and without the refinement
(bilinear upsampling). Frames are 240p, encoded at the default short side 480 like
val. Writes ``benchmarks/results/one_shot_train.json`` and prints a table.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

sys.path.insert(0, str(Path(__file__).resolve().parent))
from davis16 import REPO, print_table, run_variant  # noqa: E402

TRAIN = REPO.parent / "shared" / "data" / "davis2016-train-240p"
OUT = REPO / "benchmarks" / "results" / "one_shot_train.json"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="exported model folder (selfvos.from_pretrained)")
    parser.add_argument("--every", type=int, default=3, help="take every n-th training sequence (default 3)")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    if not TRAIN.is_dir():
        print(f"skipped: {TRAIN} not found", file=sys.stderr)
        return 0
    import torch

    import selfvos
    from selfvos.data.sources import open_source
    from selfvos.inference.one_shot import OneShotConfig

    torch.set_num_threads(2)
    model = selfvos.from_pretrained(args.checkpoint).eval()
    collection = [v for i, v in enumerate(open_source(f"davis:{TRAIN}")) if i % args.every == 0]
    variants = {"default (guided refinement r 16, eps 1e-5)": OneShotConfig(),
                "without guided refinement": OneShotConfig(refine_radius=0)}
    results: Dict[str, Dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        for name, cfg in variants.items():
            results[name] = run_variant(model, collection, "one-shot", Path(tmp) / str(len(results)),
                                        gt_dir=TRAIN / "Annotations", one_shot=cfg)
            print(f"{name:<44} J&F {results[name]['J&F']:5.1f}", flush=True)
    report = {"_about": {"data": f"davis2016-train-240p, one sequence in {args.every} ({len(collection)}), "
                                 "official protocol", "checkpoint": args.checkpoint, "machine": platform.platform(),
                         "date": time.strftime("%Y-%m-%d")}, "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print_table(results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
