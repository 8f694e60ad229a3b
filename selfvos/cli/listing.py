"""``selfvos list [architectures|backbones|objectives|sources|pseudo-labelers|inference-cores]``: what is registered.

``architectures`` are the model classes ``selfvos.create_model`` builds and ``selfvos.from_pretrained`` loads
(the one model registry: the MuG network, backbones, every head);
the others are the name -> constructor registries of ``selfvos.registry``.
"""
from __future__ import annotations

import argparse
from typing import List

from selfvos.registry import REGISTRIES

ARCHITECTURES = "architectures"


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="list the models (architectures: MuG, backbones, heads), backbones, objectives, "
                                  "data sources, pseudo-labelers and inference cores")
    p.add_argument("what", nargs="?", choices=sorted([ARCHITECTURES, *REGISTRIES]), help="one list (default: all)")
    p.set_defaults(func=run)


def names_of(kind: str) -> List[str]:
    """Sorted names of one list: an architecture or a registry kind."""
    if kind == ARCHITECTURES:
        from selfvos.hub.mixin import architectures  # imports torch: only when asked

        return list(architectures())
    return REGISTRIES[kind].names()


def run(args: argparse.Namespace) -> int:
    kinds = [args.what] if args.what else [ARCHITECTURES, *REGISTRIES]
    for kind in kinds:
        names = names_of(kind)
        if len(kinds) > 1:
            print(f"{kind}:")
            print("\n".join(f"  {n}" for n in names) if names else "  (none)")
        else:
            print("\n".join(names))
    return 0
