"""Name -> constructor registries, timm style.

A new backbone, head, objective, data source or pseudo-labeler is one new file plus one
``@REGISTRY.register("name")`` line. ``create(name, **cfg)`` builds it; ``names()`` lists them.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional


class Registry:
    """A named mapping of constructors with a clear error for unknown names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: Dict[str, Callable[..., Any]] = {}

    def register(self, name: Optional[str] = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(obj: Callable[..., Any]) -> Callable[..., Any]:
            key = name or getattr(obj, "__name__", None)
            if not key:
                raise ValueError(f"cannot register an unnamed {self.kind}")
            if key in self._items and self._items[key] is not obj:
                raise KeyError(f"{self.kind} {key!r} is already registered by {self._items[key]!r}")
            self._items[key] = obj
            return obj

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        _load_builtin_modules()
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none registered)"
            raise KeyError(f"unknown {self.kind} {name!r}; registered {self.kind}s: {known}") from None

    def create(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def names(self) -> List[str]:
        _load_builtin_modules()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        _load_builtin_modules()
        return name in self._items

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._items)})"


BACKBONES = Registry("backbone")
HEADS = Registry("head")
OBJECTIVES = Registry("objective")
SOURCES = Registry("source")
PSEUDO_LABELERS = Registry("pseudo-labeler")

REGISTRIES = {
    "backbones": BACKBONES,
    "heads": HEADS,
    "objectives": OBJECTIVES,
    "sources": SOURCES,
    "pseudo-labelers": PSEUDO_LABELERS,
}

# Modules whose import fills the registries. Importing lazily keeps `selfvos --help` fast and
# avoids import cycles; a module listed here that does not exist yet is simply skipped.
_BUILTIN_MODULES = (
    "selfvos.data.sources",
    "selfvos.backbones",
    "selfvos.pretrain",
    "selfvos.heads",
    "selfvos.pseudo",
)
_loaded = False


def _load_builtin_modules() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib

    for module in _BUILTIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:  # only tolerate the module itself being absent
            if err.name != module:
                raise
