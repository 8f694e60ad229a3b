"""The engine is generic: recipes import it, it never imports a recipe (selfvos.pretrain) or the pseudo-labels."""
from __future__ import annotations

import ast
from pathlib import Path

import selfvos.engine

FORBIDDEN = ("selfvos.pretrain", "selfvos.pseudo")


def imported_modules(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_engine_imports_no_recipe_and_no_pseudo_labels():
    engine = Path(selfvos.engine.__file__).parent
    found = {f"{path.name}: {name}" for path in sorted(engine.glob("*.py")) for name in imported_modules(path)
             if name.startswith(FORBIDDEN)}
    assert not found, sorted(found)
