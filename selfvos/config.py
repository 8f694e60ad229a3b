"""Typed dataclass configs: YAML files, dotted command-line overrides and exact round trips, on draccus.

Every config is a (nested) dataclass. ``to_dict``/``from_dict`` are draccus's ``encode``/``decode``
(the config library lerobot uses), so ``from_dict(C, to_dict(c)) == c`` and every value read from text
(a YAML recipe, a ``--section.key VALUE`` override, a checkpoint's ``config.json``) is type-checked: a value
that does not fit its field raises :class:`ConfigError` naming the dotted field, e.g.
``model.embed_dim: expected int, got 'abc' (str)``.

A field can hold one of several named sub-configs. The base class is a :data:`ChoiceConfig` (draccus's
``ChoiceRegistry``), each variant registers under a name, and the name travels as the ``type`` key::

    @dataclass
    class HeadConfig(ChoiceConfig):           # must subclass ChoiceConfig directly
        embed_dim: int = 256

    @HeadConfig.register_subclass("stm")      # outermost decorator; @dataclass below it
    @dataclass
    class STMConfig(HeadConfig):
        key_dim: int = 64

    @dataclass
    class FinetuneConfig:
        model: HeadConfig = field(default_factory=STMConfig)

    cfg = from_dict(FinetuneConfig, {"model": {"type": "stm", "key_dim": 32}})   # -> STMConfig(key_dim=32)
    to_dict(cfg)["model"]                     # {"type": "stm", "embed_dim": 256, "key_dim": 32}
    apply_overrides(cfg, ["--model.type", "feelvos", "--model.embed_dim", "128"])

``--model.type NAME`` switches to NAME's defaults before the other ``--model.*`` overrides apply; an unknown
name is an error listing the registered ones. A YAML recipe says ``model: {type: stm, key_dim: 32}``.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
import typing
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Type, TypeVar, Union

import draccus
import yaml
from draccus.parsers import decoding
from draccus.utils import DecodingError, ParsingError, is_choice_type, is_dict, is_enum, is_list, is_tuple, is_union

from selfvos.errors import SelfvosInputError

T = TypeVar("T")

ChoiceConfig = draccus.ChoiceRegistry
"""Base of a registry of named sub-configs (draccus's ``ChoiceRegistry`` itself: draccus only treats
*direct* subclasses of it as choice bases, so this is an alias, not a subclass)."""

TYPE_KEY = draccus.CHOICE_TYPE_KEY  # "type"
_MISSING = object()


class ConfigError(SelfvosInputError):
    """A config value that is missing, unknown or of the wrong type.

    ``field`` is the dotted field (``"train.max_steps"``, None when the whole config is at fault), ``source``
    the file it came from (if any), ``problem`` what is wrong; ``str(err)`` is ``"[source: ][field: ]problem"``.
    It is a ``SelfvosInputError`` (a ``ValueError``), so ``selfvos`` commands print it as one line.
    """

    def __init__(self, field: Optional[str], problem: str, source: Optional[str] = None) -> None:
        self.field = field or None
        self.source = source
        self.path = ": ".join(p for p in (source, field) if p)  # SelfvosInputError's "where" part
        self.problem = problem
        ValueError.__init__(self, f"{self.path}: {problem}" if self.path else problem)

    def __str__(self) -> str:  # KeyError subclasses would otherwise print the repr
        return self.args[0]


class ConfigKeyError(ConfigError, KeyError):
    """An unknown key in a config or an override; also a ``KeyError`` (as before draccus)."""


# ---------------------------------------------------------------------------------------------------------
# Strict scalars. draccus decodes scalars leniently (str(5) -> "5", int("12"), int(True), None passes for a
# non-Optional str/float/Path, a str decodes as a Tuple of its characters), so its registry gets strict
# decoders for these types; everything structural (nesting, lists, dicts, unions, choices, unknown and
# missing fields) stays draccus's own. The registry is global: other draccus users in this process get
# the strict decoders too.


def _strict(kind: type, accepts: Any) -> Any:
    def decode(cls: Any, raw: Any, path: Sequence[str]) -> Any:
        if is_enum(cls):  # str/int-valued enums subclass str/int: draccus's own rule
            return decoding.decode_enum(cls, raw, path)
        if not accepts(raw):
            raise DecodingError(path, f"expected {_type_name(cls)}, got {raw!r} ({type(raw).__name__})")
        return cls(raw)

    return decode


def _decode_tuple(cls: Any, raw: Any, path: Sequence[str]) -> tuple:
    if not isinstance(raw, (list, tuple)):
        raise DecodingError(path, f"expected a list for {_type_name(cls)}, got {raw!r} ({type(raw).__name__})")
    return decoding.decode_tuple(*getattr(cls, "__args__", ()))(raw, path)


def _number(raw: Any) -> bool:
    return isinstance(raw, (int, float)) and not isinstance(raw, bool)


for _kind, _accepts in (
    (int, lambda raw: isinstance(raw, int) and not isinstance(raw, bool)),  # 1e3 / "12" / True are errors
    (float, _number),  # ints widen to float
    (bool, lambda raw: isinstance(raw, bool)),
    (str, lambda raw: isinstance(raw, str)),
    (Path, lambda raw: isinstance(raw, (str, os.PathLike))),
):
    draccus.decode.register(_kind, _strict(_kind, _accepts), include_subclasses=True)
draccus.decode.register(tuple, _decode_tuple, include_subclasses=True)
decoding.get_decoding_fn.cache_clear()  # drop decoders built before these were registered


# ---------------------------------------------------------------------------------------------------------
# dict <-> dataclass


def to_dict(cfg: Any) -> Dict[str, Any]:
    """Dataclass -> nested plain dict (JSON/YAML serialisable), via ``draccus.encode``.

    Tuples become lists, paths strings; a sub-config in a :data:`ChoiceConfig` field gets its ``type`` key,
    and so does a registered choice config at the top (so ``from_dict(Base, to_dict(c))`` works).
    """
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"expected a dataclass instance, got {type(cfg).__name__}")
    if is_choice_type(type(cfg)):
        names = sorted(type(cfg).get_known_choices())
        raise TypeError(f"{type(cfg).__name__} is a choice base; use one of its registered configs {names}")
    base = _choice_base(type(cfg))
    return draccus.encode(cfg, base if base is not None and _choice_name(base, type(cfg)) else None)


def from_dict(cls: Type[T], data: Dict[str, Any], *, where: Optional[str] = None) -> T:
    """Nested dict -> typed dataclass via ``draccus.decode``; ``where`` (a file) prefixes error messages.

    Every value is checked against its field's type; unknown keys raise :class:`ConfigKeyError` naming them,
    other problems :class:`ConfigError` naming the dotted field.
    """
    if not isinstance(data, dict):
        raise ConfigError(None, f"expected a mapping for {cls.__name__}, got {type(data).__name__}", where)
    cls, data = _own_type_key(cls, data, where)
    try:
        return draccus.decode(cls, data)
    except ParsingError as err:  # DecodingError included
        raise _explain(err, cls, data, where) from err


def _choice_base(cls: type) -> Optional[type]:
    """The ``ChoiceConfig`` base that config class ``cls`` derives from (None for other classes and bases)."""
    if is_choice_type(cls):
        return None
    return next((b for b in cls.__mro__[1:] if is_choice_type(b) and "_choice_registry" in vars(b)), None)


def _choice_name(base: type, cls: type) -> Optional[str]:
    try:
        return base.get_choice_name(cls)
    except ValueError:
        return None


def _own_type_key(cls: type, data: Dict[str, Any], where: Optional[str]) -> Tuple[type, Dict[str, Any]]:
    """A top-level ``type`` key for a registered config class: it must name ``cls`` or a subclass of it.

    draccus only reads ``type`` where a field is declared as the choice base; this keeps
    ``from_dict(STMConfig, to_dict(stm))`` working now that ``to_dict`` writes it.
    """
    base = _choice_base(cls)
    if base is None or TYPE_KEY not in data:
        return cls, data
    known = base.get_known_choices()
    named = known.get(data[TYPE_KEY])
    if named is None or not issubclass(named, cls):
        fitting = sorted(name for name, sub in known.items() if issubclass(sub, cls))
        problem = f"{data[TYPE_KEY]!r} is not a {cls.__name__}; expected one of {fitting}"
        raise ConfigError(TYPE_KEY, problem, where)
    return named, {k: v for k, v in data.items() if k != TYPE_KEY}


# ---------------------------------------------------------------------------------------------------------
# Walking a plain config dict alongside its declared types (for error messages and overrides)


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> Dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # unresolvable hints: draccus reports the real problem when decoding
        return {}


def _resolve(tp: Any, node: Any) -> Any:
    """``Optional[X]`` -> ``X``; a choice base -> the registered class that ``node['type']`` names."""
    if is_union(tp):
        arms = [arg for arg in tp.__args__ if arg is not type(None)]
        if len(arms) == 1:
            tp = arms[0]
    if is_choice_type(tp) and isinstance(node, dict):
        name = node.get(TYPE_KEY, tp.default_choice_name())
        tp = tp.get_known_choices().get(name, tp) if isinstance(name, str) else tp
    return tp


def _children(tp: Any, node: Any) -> Iterator[Tuple[str, Any, Any]]:
    """``(key, declared type, value)`` of each entry of ``node`` that ``tp`` describes."""
    tp = _resolve(tp, node)
    args = getattr(tp, "__args__", ()) or ()
    if isinstance(node, dict) and dataclasses.is_dataclass(tp):
        hints = _hints(tp)
        yield from ((k, hints[k], v) for k, v in node.items() if k in hints)
    elif isinstance(node, dict) and is_dict(tp):
        yield from ((str(k), args[1] if len(args) == 2 else Any, v) for k, v in node.items())
    elif isinstance(node, (list, tuple)) and (is_list(tp) or is_tuple(tp)):
        for i, v in enumerate(node):
            if is_tuple(tp) and args and args[-1] is not Ellipsis:
                item = args[i] if i < len(args) else None
            else:
                item = args[0] if args else Any
            yield str(i), item, v


def _walk(tp: Any, node: Any, path: Tuple[str, ...] = ()) -> Iterator[Tuple[Tuple[str, ...], Any, Any]]:
    yield path, tp, node
    for key, child_tp, child in _children(tp, node):
        yield from _walk(child_tp, child, path + (key,))


def _lookup(tp: Any, node: Any, parts: Sequence[str]) -> Tuple[Any, Any]:
    """Declared type and value at a dotted path (``(None, _MISSING)`` when the data has no such entry)."""
    for part in parts:
        match = next((c for c in _children(tp, node) if c[0] == part), None)
        if match is None:
            return None, _MISSING
        _, tp, node = match
    return tp, node


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and not getattr(tp, "__args__", None):
        return tp.__name__
    return re.sub(r"\b(typing|builtins|pathlib)\.", "", str(tp))


def _choice_problem(tp: Any, node: Any) -> Optional[str]:
    """What is wrong with ``node`` as a value of choice base ``tp`` (None when fine or not a choice)."""
    base = _resolve(tp, None)
    if not is_choice_type(base) or (node is None and base is not tp):
        return None
    names = sorted(base.get_known_choices())
    if not isinstance(node, dict):
        return f"expected a mapping with a '{TYPE_KEY}' key (one of {names}), got {node!r}"
    name = node.get(TYPE_KEY, base.default_choice_name())
    if name is None:
        return f"missing '{TYPE_KEY}' key; registered types: {names}"
    if not isinstance(name, str) or name not in base.get_known_choices():
        return f"unknown type {name!r}; registered types: {names}"
    return None


def _explain(err: ParsingError, root: type, data: Dict[str, Any], where: Optional[str]) -> ConfigError:
    """Turn a draccus error into a :class:`ConfigError` that names the dotted field and the problem."""
    if isinstance(err, DecodingError):
        parts = tuple(str(p) for p in err.key_path)
        tp, node = _lookup(root, data, parts)
        # draccus reports a failure inside Optional[X] at the Optional field; the inner error is precise
        inner = err.__cause__
        if tp is not None and is_union(tp) and isinstance(inner, ParsingError) and _resolve(tp, node) is not tp:
            return _explain(inner, root, data, where)
        field = ".".join(parts) or None
        problem = _choice_problem(tp, node)
        if problem is not None:
            return ConfigError(".".join(parts + (TYPE_KEY,)) if isinstance(node, dict) else field, problem, where)
        cls = _resolve(tp, node)
        if isinstance(node, dict) and dataclasses.is_dataclass(cls):
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(node) - known - ({TYPE_KEY} if cls is not tp else set()))
            if unknown:
                problem = f"unknown key(s) {unknown} for {cls.__name__}; known: {sorted(known)}"
                return ConfigKeyError(field, problem, where)
        if inner is not None and not isinstance(inner, ParsingError):  # e.g. a string where a list belongs
            return ConfigError(field, f"expected {_type_name(tp)}, got {node!r} ({type(node).__name__})", where)
        return ConfigError(field, err.message, where)
    if isinstance(err.__cause__, (TypeError, ValueError)):  # the dataclass's own __post_init__ check
        return ConfigError(None, str(err.__cause__), where)
    for path, tp, node in _walk(root, data):  # draccus gives no path for a malformed choice value
        problem = _choice_problem(tp, node)
        if problem is not None:
            return ConfigError(".".join(path + ((TYPE_KEY,) if isinstance(node, dict) else ())), problem, where)
    return ConfigError(None, str(err), where)


# ---------------------------------------------------------------------------------------------------------
# YAML. PyYAML follows YAML 1.1, where ``1e-4`` and ``1e3`` are strings; these add the YAML 1.2 float form so
# ``lr: 1e-4`` is a float (and a string like "1e3" is quoted when saved, keeping round trips exact).

_FLOAT_12 = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


class _Loader(yaml.SafeLoader):
    pass


class _Dumper(yaml.SafeDumper):
    pass


for _cls in (_Loader, _Dumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


def load_yaml(cls: Type[T], path: Union[str, Path]) -> T:
    """Read a YAML file into ``cls``; errors name the file and the dotted field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    try:
        data = yaml.load(path.read_text(), Loader=_Loader)
    except yaml.YAMLError as err:
        raise ConfigError(None, f"not valid YAML ({err})", str(path)) from None
    return from_dict(cls, {} if data is None else data, where=str(path))


def save_yaml(cfg: Any, path: Union[str, Path]) -> None:
    """Write ``to_dict(cfg)`` as YAML that ``load_yaml`` reads back to an equal config."""
    Path(path).write_text(yaml.dump(to_dict(cfg), Dumper=_Dumper, sort_keys=False))


# ---------------------------------------------------------------------------------------------------------
# Dotted overrides (draccus's own CLI builds an argparse parser per field; selfvos CLIs take free-form
# ``--section.key VALUE`` pairs next to their own flags, so the tokens are split here and decoded by draccus)


def _split(argv: Sequence[str]) -> List[Tuple[str, str]]:
    """``["--a.b", "1", "--c=x"]`` -> ``[("a.b", "1"), ("c", "x")]`` (raw text)."""
    out, i, argv = [], 0, list(argv)
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
        out.append((key, raw))
        i += 1
    return out


def _yaml_value(key: str, raw: str) -> Any:
    if raw == "":
        return ""
    try:
        return yaml.load(raw, Loader=_Loader)
    except yaml.YAMLError:
        raise ConfigError(key, f"value {raw!r} is not valid YAML") from None


def parse_overrides(argv: Sequence[str]) -> Dict[str, Any]:
    """``["--a.b", "1", "--c=x"]`` -> ``{"a.b": 1, "c": "x"}`` (values parsed as YAML scalars)."""
    return {key: _yaml_value(key, raw) for key, raw in _split(argv)}


def _text_value(raw: str, tp: Any) -> Any:
    """The value of an override for a ``str``/``Path`` field: the text as typed (``--run_name 001`` stays
    "001"), unless YAML reads it as a string (quotes) or as null for an Optional field."""
    try:
        parsed = yaml.load(raw, Loader=_Loader) if raw else raw
    except yaml.YAMLError:
        return raw
    if isinstance(parsed, str) or (parsed is None and _resolve(tp, None) is not tp):
        return parsed
    return raw


def _is_text(tp: Any) -> bool:
    return _resolve(tp, None) in (str, Path)


def apply_overrides(cfg: T, overrides: Union[Dict[str, Any], Sequence[str]]) -> T:
    """Return a new config with dotted overrides applied, re-checked by ``from_dict``.

    ``overrides`` is ``{"train.max_steps": 100}`` (Python values) or ``["--train.max_steps", "100"]``
    (YAML text; ``str``/``Path`` fields take the text as typed). ``--model.type NAME`` on a
    :data:`ChoiceConfig` field starts that section from NAME's defaults and is applied before the other
    overrides; ``Dict`` fields (option bags) accept new keys, dataclass sections only their fields.
    """
    root = type(cfg)
    if isinstance(overrides, dict):
        items = [(key, value, None) for key, value in overrides.items()]
    else:
        items = [(key, None, raw) for key, raw in _split(overrides)]
    items.sort(key=lambda item: item[0].split(".")[-1] != TYPE_KEY)  # type switches first (stable)
    data = to_dict(cfg)
    for dotted, value, raw in items:
        parts = dotted.split(".")
        section_tp, section = _lookup(root, data, parts[:-1]) if parts[:-1] else (root, data)
        if parts[-1] == TYPE_KEY and len(parts) > 1 and is_choice_type(_resolve(section_tp, None)):
            name = _yaml_value(dotted, raw) if raw is not None else value
            _switch_choice(data, root, parts[:-1], _resolve(section_tp, None), name)
            continue
        if not isinstance(section, dict):
            raise ConfigKeyError(dotted, f"no section {_first_missing(root, data, parts)!r} in {root.__name__}")
        tp, _ = _lookup(root, data, parts)
        if parts[-1] not in section and not is_dict(_resolve(section_tp, section)):
            raise ConfigKeyError(dotted, f"no key {parts[-1]!r}; known: {sorted(section)}")
        if raw is not None:
            value = _text_value(raw, tp) if _is_text(tp) else _yaml_value(dotted, raw)
        else:
            value = _plain_value(dotted, value, tp)
        section[parts[-1]] = value
    return from_dict(root, data)


def _first_missing(root: type, data: Dict[str, Any], parts: List[str]) -> str:
    """The first section of a dotted override path that is not a mapping in the config."""
    return next(p for i, p in enumerate(parts) if not isinstance(_lookup(root, data, parts[:i + 1])[1], dict))


def _plain_value(dotted: str, value: Any, tp: Any) -> Any:
    """A Python override value as plain data: tuples -> lists, paths -> str, sub-configs -> dicts (with the
    ``type`` key where the field is a choice). Only a sub-config is encoded against the declared type:
    draccus's encoder trusts it to match (a list given for a tuple field would break it)."""
    try:
        return draccus.encode(value, tp if dataclasses.is_dataclass(value) else None)
    except Exception as err:  # draccus raises bare Exceptions for objects it cannot encode
        raise ConfigError(dotted, f"cannot store {value!r} ({type(value).__name__}) in a config: {err}") from None


def _switch_choice(data: Dict[str, Any], root: type, parts: List[str], base: type, name: Any) -> None:
    """Replace the choice section at ``parts`` by the defaults of ``name`` (unless it already is ``name``)."""
    holder = _lookup(root, data, parts[:-1])[1] if len(parts) > 1 else data
    current = holder[parts[-1]]
    if isinstance(current, dict) and current.get(TYPE_KEY) == name:
        return
    field = ".".join(parts + [TYPE_KEY])
    known = base.get_known_choices()
    if not isinstance(name, str) or name not in known:
        raise ConfigError(field, f"unknown type {name!r}; registered types: {sorted(known)}")
    try:
        defaults = known[name]()
    except TypeError as err:
        problem = f"{known[name].__name__} has required fields ({err}); give the whole section"
        raise ConfigError(field, problem) from None
    holder[parts[-1]] = draccus.encode(defaults, base)
