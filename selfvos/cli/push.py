"""``selfvos push --checkpoint DIR --repo-id ORG/NAME``: publish a checkpoint with its model card.

``--dry-run OUT_DIR`` writes exactly the folder that would be uploaded (model.safetensors, config.json,
README.md) and uploads nothing. ``--benchmark-json F`` fills the card's measured metrics with the results of
``F`` measured on exactly these weights (their ``weights_sha256``, written by the benchmarks, equals the SHA-256 of
the checkpoint's model.safetensors); a file without such results, or with results that record no weights, is
refused. Without it the card says "not measured".
"""
from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="publish a checkpoint (weights, config, model card) to the Hugging Face Hub")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (config.json + model.safetensors)")
    p.add_argument("--repo-id", required=True, help="Hub repo, ORG/NAME")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--revision", default=None, help="branch to push to (created if missing; default main)")
    p.add_argument("--benchmark-json", default=None,
                   help="benchmark results for the card's model-index; only those measured on these weights "
                        "(weights_sha256) are used, and a file with none is refused")
    p.add_argument("--commit-message", default="Upload selfvos checkpoint")
    p.add_argument("--dry-run", metavar="OUT_DIR", default=None, help="write the upload folder here, upload nothing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from selfvos.hub.publish import push_checkpoint

    result = push_checkpoint(
        args.checkpoint,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        benchmark_json=args.benchmark_json,
        dry_run_dir=args.dry_run,
        commit_message=args.commit_message,
    )
    verb = "wrote the upload folder" if result.dry_run else "pushed"
    print(f"{verb}: {result.location}")
    for name in result.files:
        print(f"  {name}")
    return 0
