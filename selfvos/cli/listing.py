"""``selfvos list [backbones|heads|objectives|sources|pseudo-labelers]``: print registry contents."""
from __future__ import annotations

import argparse

from selfvos.registry import REGISTRIES


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="list registered backbones, heads, objectives, data sources, pseudo-labelers")
    p.add_argument("what", nargs="?", choices=sorted(REGISTRIES), help="one registry (default: all)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    kinds = [args.what] if args.what else list(REGISTRIES)
    for kind in kinds:
        names = REGISTRIES[kind].names()
        if len(kinds) > 1:
            print(f"{kind}:")
            print("\n".join(f"  {n}" for n in names) if names else "  (none)")
        else:
            print("\n".join(names))
    return 0
