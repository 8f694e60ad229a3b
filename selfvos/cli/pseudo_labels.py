"""``selfvos pseudo-labels --data SPEC --out STORE_DIR``: generate soft pseudo-masks without human labels.

Methods: ``mr`` (manifold-ranking appearance saliency), ``motion`` (optical flow with the camera motion
removed), ``fused`` (both, with a colour-model clean-up; the default). Masks go into a versioned store
(``STORE_DIR/round_KKK/<video>/<index>.png``); an interrupted run resumes where it stopped, and a
finished round is never overwritten unless ``--overwrite`` is given. Where the data has ground-truth
masks, ``--eval-gt`` prints J of the pseudo-masks against them.

Under ``accelerate launch`` (N processes, any machines sharing the store folder) every process labels its
shard of the videos into the same round and the main process writes one merged manifest and prints the
summary; the masks are the ones one process writes, and a re-run with any N resumes the unfinished videos.

Examples::

    selfvos pseudo-labels --data davis:../shared/data/davis2016-train-240p --out out/pseudo --frame-step 10 --eval-gt
    selfvos pseudo-labels --data video:../shared/data/videos/dog.mp4 --out out/dog --max-side 480 --gallery dog.png
    accelerate launch --num_processes 4 "$(which selfvos)" pseudo-labels --data davis:DAVIS --out out/pseudo
"""
from __future__ import annotations

import argparse
import os
from typing import List, Optional


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="generate soft pseudo-masks (manifold ranking, motion, fused) into a versioned store",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="data spec for open_source (davis:PATH, video:FILE, frames:DIR, ...)")
    p.add_argument("--out", required=True, help="pseudo-label store folder")
    p.add_argument("--round", type=int, default=0, help="round number to write (default 0)")
    p.add_argument("--method", choices=("mr", "motion", "fused"), default="fused", help="pseudo-labeler (default fused)")
    p.add_argument("--frame-step", type=int, default=1, help="label every N-th frame (default 1)")
    p.add_argument("--max-side", type=int, default=0, help="work at longest side N and upsample (0 = native size)")
    p.add_argument("--sequences", default=None, help="comma-separated video names (default: all)")
    p.add_argument("--flow-cache", default=None, help="folder to cache optical flow in (motion / fused)")
    p.add_argument("--eval-gt", action="store_true", help="print J against ground-truth masks where they exist")
    p.add_argument("--gallery", default=None, help="write a PNG gallery (frame | pseudo-mask | GT) here")
    p.add_argument("--overwrite", action="store_true", help="redo this round even if it is complete")
    p.set_defaults(func=run)


def build_labeler(method: str, max_side: int = 0, flow_cache: Optional[str] = None):
    """The registered labeler for ``method`` with the CLI's resolution / cache settings."""
    from selfvos.registry import PSEUDO_LABELERS

    options = {"max_side": max_side}
    if method in ("motion", "fused"):
        options["cache_dir"] = flow_cache
    return PSEUDO_LABELERS.create(method, **options)


def shard_plan():
    """This process's :class:`~selfvos.pseudo.generate.ShardPlan`: the ``accelerate`` process group when the
    launcher started several processes (``WORLD_SIZE`` > 1), else one process (accelerate is not imported)."""
    from selfvos.errors import SelfvosInputError
    from selfvos.pseudo.generate import ShardPlan

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return ShardPlan()
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))  # --cpu / use_cpu: gloo processes
    if state.num_processes != world:
        raise SelfvosInputError("WORLD_SIZE", f"{world} processes launched but accelerate set up "
                                              f"{state.num_processes} (no accelerator here? launch with --cpu)")
    return ShardPlan.from_state(state)


def run(args: argparse.Namespace) -> int:
    from selfvos.data.sources import open_source
    from selfvos.errors import SelfvosInputError
    from selfvos.pseudo import PseudoLabelStore, generate_pseudo_labels

    if args.frame_step < 1:
        raise SelfvosInputError("--frame-step", f"must be >= 1, got {args.frame_step}")
    if args.round < 0:
        raise SelfvosInputError("--round", f"must be >= 0, got {args.round}")
    if args.max_side < 0:
        raise SelfvosInputError("--max-side", f"must be >= 0 (0 = native size), got {args.max_side}")
    sequences: Optional[List[str]] = [s.strip() for s in args.sequences.split(",") if s.strip()] if args.sequences else None
    collection = open_source(args.data).select(sequences)
    store = PseudoLabelStore(args.out)
    labeler = build_labeler(args.method, args.max_side, args.flow_cache)
    plan = shard_plan()
    manifest = generate_pseudo_labels(collection, store, args.round, labeler, frame_step=args.frame_step,
                                      overwrite=args.overwrite, eval_gt=args.eval_gt, progress=plan.is_main,
                                      shard=plan)
    if not plan.is_main:
        return 0
    print(f"round {args.round}: {len(manifest['completed_videos'])} videos in {store.round_dir(args.round)}")
    quality = manifest.get("quality")
    if args.eval_gt:
        if quality and quality["mean_j"] is not None:
            for name, j in quality["per_video"].items():
                print(f"  {name:<24s} J {j:.3f}")
            print(f"mean J over {len(quality['per_video'])} videos ({quality['frames']} frames): {quality['mean_j']:.3f}")
        else:
            print("no ground-truth masks in this data: nothing to evaluate")
    if args.gallery:
        from selfvos.pseudo.gallery import make_gallery

        path = make_gallery(collection, store.mask_provider(args.round), args.gallery)
        print(f"gallery: {path}")
    return 0
