"""Typed dataclass configs: YAML files, dotted command-line overrides and exact round trips.

Every config is a (nested) dataclass. ``from_dict`` rebuilds the typed objects from plain dicts
(JSON/YAML), so ``from_dict(C, to_dict(c)) == c``. ``apply_overrides`` takes
``["--train.max_steps", "100", "--model.backbone=resnet34"]`` and parses each value as YAML.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Type, TypeVar, Union

import yaml

T = TypeVar("T")


def to_dict(cfg: Any) -> Dict[str, Any]:
    """Dataclass -> nested plain dict (JSON/YAML serialisable)."""
    if not dataclasses.is_dataclass(cfg):
        raise TypeError(f"expected a dataclass instance, got {type(cfg).__name__}")
    return _plain(cfg)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def from_dict(cls: Type[T], data: Dict[str, Any], *, where: str = "config") -> T:
    """Nested dict -> typed dataclass; unknown keys are an error that names them."""
    if not isinstance(data, dict):
        raise TypeError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise KeyError(f"{where}: unknown key(s) {unknown} for {cls.__name__}; known: {sorted(names)}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _convert(non_none[0], value, where)
        return value
    if dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else from_dict(tp, value, where=where)
    if origin in (list, List, Sequence) and args:
        return [_convert(args[0], v, where) for v in value]
    if origin in (tuple, Tuple) and args:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, where) for v in value)
        return tuple(_convert(a, v, where) for a, v in zip(args, value))
    if origin in (dict, Dict) and args:
        return {k: _convert(args[1], v, where) for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is Path and isinstance(value, str):
        return Path(value)
    return value


def load_yaml(cls: Type[T], path: Union[str, Path]) -> T:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from None
    return from_dict(cls, data, where=str(path))


def save_yaml(cfg: Any, path: Union[str, Path]) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def parse_overrides(argv: Sequence[str]) -> Dict[str, Any]:
    """``["--a.b", "1", "--c=x"]`` -> ``{"a.b": 1, "c": "x"}`` (values parsed as YAML scalars)."""
    out: Dict[str, Any] = {}
    i = 0
    argv = list(argv)
    while i < len(argv):
        tok = argv[i]
        if not tok.startswith("--"):
            raise ValueError(f"override {tok!r} must look like --section.key VALUE or --section.key=VALUE")
        key = tok[2:]
        if "=" in key:
            key, raw = key.split("=", 1)
        else:
            if i + 1 >= len(argv):
                raise ValueError(f"override --{key} has no value")
            i += 1
            raw = argv[i]
        out[key] = yaml.safe_load(raw) if raw != "" else ""
        i += 1
    return out


def apply_overrides(cfg: T, overrides: Union[Dict[str, Any], Sequence[str]]) -> T:
    """Return a new config with dotted overrides applied and re-validated through ``from_dict``."""
    if not isinstance(overrides, dict):
        overrides = parse_overrides(overrides)
    data = to_dict(cfg)
    for dotted, value in overrides.items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            if not isinstance(node, dict) or part not in node:
                raise KeyError(f"override --{dotted}: no section {part!r} in {type(cfg).__name__}")
            node = node[part]
        if not isinstance(node, dict) or parts[-1] not in node:
            raise KeyError(f"override --{dotted}: no key {parts[-1]!r}; known: {sorted(node) if isinstance(node, dict) else node}")
        node[parts[-1]] = value
    return from_dict(type(cfg), data)
