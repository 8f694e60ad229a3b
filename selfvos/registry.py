"""Name -> constructor registries, timm style, and the one model registry.

A new backbone, objective, data source, pseudo-labeler, inference core or online fine-tuning loss is one new
file plus one ``@REGISTRY.register("name")`` line. ``create(name, **cfg)`` builds it; ``names()`` lists them.

Models (the pretrained MuG network, backbones, every supervised head) have ONE registry: the architecture
name a class declares with ``@register_architecture`` (``selfvos.hub.mixin``), which is also what
``config.json`` stores. :func:`create_model` builds one by name, :func:`list_models` lists them, and
``selfvos.from_pretrained`` loads a checkpoint by the architecture in its ``config.json``.
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
OBJECTIVES = Registry("objective")
SOURCES = Registry("source")
PSEUDO_LABELERS = Registry("pseudo-labeler")
CORES = Registry("inference core")  # architecture -> factory(model, task, options) (selfvos.inference.core)
# architecture -> loss(model, batch, **options) -> scalar tensor of online fine-tuning (selfvos.inference.online)
ONLINE_LOSSES = Registry("online loss")

REGISTRIES = {
    "backbones": BACKBONES,
    "objectives": OBJECTIVES,
    "sources": SOURCES,
    "pseudo-labelers": PSEUDO_LABELERS,
    "inference-cores": CORES,
    "online-losses": ONLINE_LOSSES,
}

# Modules whose import fills the registries. Importing lazily keeps `selfvos --help` fast and
# avoids import cycles; a module listed here that does not exist yet is simply skipped.
_BUILTIN_MODULES = (
    "selfvos.data.sources",
    "selfvos.backbones",
    "selfvos.pretrain",
    "selfvos.heads",
    "selfvos.pseudo",
    "selfvos.inference.label_free",
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


def list_models(task: Optional[str] = None) -> List[str]:
    """Registered model architectures, optionally only those whose class runs ``task`` (``"one-shot"``,
    ``"zero-shot"``): a class lists its tasks in ``tasks``; models without it (backbones, MuG) are listed
    only when ``task`` is None."""
    from selfvos.hub.mixin import architectures

    return [name for name, cls in architectures().items() if task is None or task in getattr(cls, "tasks", ())]


def create_model(name: str, config: Any = None, /, **overrides: Any) -> Any:
    """Build a registered model by architecture name with its default config, or ``config``, with dotted
    ``overrides`` applied (``create_model("stm", **{"backbone.name": "resnet34"})``); weights are random
    (or initialised as the config says)."""
    from selfvos.config import apply_overrides
    from selfvos.hub.mixin import architectures, config_class_of

    known = architectures()
    if name not in known:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(known) or '(none)'}")
    cls = known[name]
    cfg = config if config is not None else config_class_of(cls)()
    if overrides:
        cfg = apply_overrides(cfg, dict(overrides))
    return cls(cfg)
