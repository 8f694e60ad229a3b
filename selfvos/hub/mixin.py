"""``SelfvosModelMixin``: save/load any selfvos model as ``config.json`` + ``model.safetensors``.

A model class names its architecture and takes one typed dataclass config::

    @register_architecture
    class MugNet(SelfvosModelMixin, nn.Module):
        architecture = "mug-resnet18"
        def __init__(self, config: MugConfig) -> None: ...   # or class attribute config_class = MugConfig

``save_pretrained(dir)`` writes ``config.json`` = ``{"architecture", "selfvos_version", "config": {...}}``
and the weights atomically. ``MugNet.from_pretrained(dir_or_repo_id)`` rebuilds the config as EQUAL typed
dataclasses (``selfvos.config.from_dict``), loads strictly by default, and puts the model in eval mode;
``selfvos.from_pretrained`` picks the class from the architecture name. Unlike
``PyTorchModelHubMixin`` (strict=False, nested configs reloaded as dicts), nothing here is lenient: weights
holding NaN or inf are neither saved nor loaded unless ``allow_nonfinite=True``, and a config.json whose
values do not fit the model's config is a ``SelfvosInputError`` naming config.json and the field.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
import time
import types
import typing
import uuid
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Type, TypeVar, Union

import torch

from selfvos.config import from_dict, to_dict
from selfvos.errors import NonFiniteWeightsError, SelfvosInputError
from selfvos.hub.files import CONFIG_NAME, PathOrRepoId, read_config, resolve_file
from selfvos.hub.weights import WEIGHTS_NAME, first_nonfinite, load_weights, save_weights

M = TypeVar("M", bound="SelfvosModelMixin")
_STAGING = re.compile(r"^\.(?P<name>.+)\.tmp-[0-9a-f]{12}$")  # save_pretrained's staging folders
STALE_STAGING_SECONDS = 3600  # another target's staging folder this old is left over from a killed save
_ARCHITECTURES: Dict[str, type] = {}
_BUILDING_FROM_CHECKPOINT: ContextVar[bool] = ContextVar("selfvos_building_from_checkpoint", default=False)


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """Card metadata a model class carries (``info = ModelInfo(...)``): a one-line summary, the citation keys
    of ``selfvos.hub.papers.BIBTEX`` and the datasets/metrics its card should name."""

    summary: str
    papers: typing.Tuple[str, ...] = ()
    limitation: str = ""


def building_from_checkpoint() -> bool:
    """True while a strict ``from_pretrained`` constructs a model: the checkpoint will overwrite every
    weight, so constructors skip loading initial weights (e.g. ``BackboneConfig.pretrained``)."""
    return _BUILDING_FROM_CHECKPOINT.get()


def config_class_of(cls: type) -> type:
    """The dataclass a model class is built from: ``cls.config_class`` or the hint on ``__init__(config)``."""
    explicit = getattr(cls, "config_class", None)
    if explicit is None:
        try:
            explicit = typing.get_type_hints(cls.__init__).get("config")
        except NameError as err:  # a hint naming a class the module cannot see
            raise TypeError(f"{cls.__name__}.__init__ config hint cannot be resolved ({err}); set config_class") from None
        if typing.get_origin(explicit) in (typing.Union, types.UnionType):  # Optional[MyConfig]
            options = [arg for arg in typing.get_args(explicit) if arg is not type(None)]
            explicit = options[0] if len(options) == 1 else None
    if not (isinstance(explicit, type) and dataclasses.is_dataclass(explicit)):
        raise TypeError(
            f"{cls.__name__} needs a dataclass config: set `config_class = MyConfig` or annotate __init__(self, config: MyConfig)"
        )
    return explicit


def register_architecture(cls: Type[M]) -> Type[M]:
    """Class decorator: make ``cls`` loadable by ``selfvos.from_pretrained`` under ``cls.architecture``."""
    name = cls.__dict__.get("architecture")
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} must define a class attribute `architecture = '<name>'`")
    if not issubclass(cls, SelfvosModelMixin):
        raise TypeError(f"{cls.__name__} must inherit SelfvosModelMixin to be registered")
    config_class_of(cls)
    existing = _ARCHITECTURES.get(name)
    if existing is not None and _qualname(existing) != _qualname(cls):
        raise KeyError(f"architecture {name!r} is already registered by {_qualname(existing)}")
    _ARCHITECTURES[name] = cls
    return cls


def architectures() -> Dict[str, type]:
    """Registered architecture name -> class (after importing the built-in model packages)."""
    from selfvos.registry import _load_builtin_modules

    _load_builtin_modules()
    return dict(sorted(_ARCHITECTURES.items()))


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class SelfvosModelMixin:
    """Mix into an ``nn.Module`` that has ``architecture: ClassVar[str]`` and a dataclass ``self.config``."""

    architecture: ClassVar[str]
    config: Any

    def hub_config(self) -> Dict[str, Any]:
        """The ``config.json`` document; refuses a config that would not reload to an equal object."""
        from selfvos import __version__

        architecture = getattr(type(self), "architecture", None)
        if not isinstance(architecture, str) or not architecture:
            raise TypeError(f"{type(self).__name__} must define a class attribute `architecture = '<name>'`")
        config_class = config_class_of(type(self))
        if not isinstance(self.config, config_class):
            raise TypeError(f"{type(self).__name__}.config is {type(self.config).__name__}, not {config_class.__name__}")
        plain = to_dict(self.config)
        if from_dict(config_class, json.loads(json.dumps(plain))) != self.config:
            raise TypeError(f"{config_class.__name__} does not survive a JSON round trip; use typed fields")
        return {"architecture": architecture, "selfvos_version": __version__, "config": plain}

    def save_pretrained(self, save_directory: Union[str, Path], *, allow_nonfinite: bool = False) -> Path:
        """Write ``model.safetensors`` and ``config.json`` into ``save_directory``; returns its path.

        Files are written in a temporary sibling directory first; a new directory appears by one rename,
        an existing one gets each file by an atomic ``os.replace`` (weights first, config last). Staging
        folders left beside it by a save that was killed are removed first. Weights holding NaN or inf are
        a :class:`NonFiniteWeightsError` (nothing is written) unless ``allow_nonfinite``.
        """
        if not isinstance(self, torch.nn.Module):
            raise TypeError(f"{type(self).__name__} must be an nn.Module to save weights")
        document = self.hub_config()
        target = Path(save_directory)
        if target.exists() and not target.is_dir():
            raise SelfvosInputError(target, "exists and is not a directory")
        if not allow_nonfinite:
            bad = first_nonfinite(self.state_dict().items())
            if bad is not None:
                raise NonFiniteWeightsError(target, f"refusing to save non-finite weights: {bad}", tensor=bad.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(target)
        staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:12]}"
        staging.mkdir()  # plain mkdir (not mkdtemp, which is 0700) so the result gets the usual permissions
        try:
            save_weights(self, staging / WEIGHTS_NAME)
            (staging / CONFIG_NAME).write_text(json.dumps(document, indent=2) + "\n")
            if not target.exists():
                os.rename(staging, target)
            else:
                for name in (WEIGHTS_NAME, CONFIG_NAME):
                    os.replace(staging / name, target / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    @classmethod
    def from_pretrained(
        cls: Type[M],
        path_or_repo_id: PathOrRepoId,
        revision: Optional[str] = None,
        strict: bool = True,
        map_location: Union[str, torch.device] = "cpu",
        *,
        cache_dir: Optional[Union[str, Path]] = None,
        token: Optional[str] = None,
        allow_nonfinite: bool = False,
    ) -> M:
        """Load a checkpoint directory or Hub repo id; the model comes back in eval mode on ``map_location``.

        Called on ``SelfvosModelMixin`` itself (or via ``selfvos.from_pretrained``) the class is chosen by
        the architecture in ``config.json``; called on a model class, another architecture is an error.
        Weights holding NaN or inf are a ``SelfvosInputError`` naming the file and the first such tensor,
        unless ``allow_nonfinite``.
        """
        where = dict(revision=revision, cache_dir=cache_dir, token=token)
        config_path = resolve_file(path_or_repo_id, CONFIG_NAME, **where)
        architecture, config_dict, _ = read_config(config_path)
        own = getattr(cls, "architecture", None)
        if own is not None and own != architecture:
            raise SelfvosInputError(
                config_path,
                f"config is for architecture {architecture!r}, not {own!r} ({cls.__name__}); "
                "load it with selfvos.from_pretrained",
            )
        model_class = cls if own is not None else _architecture_class(architecture, config_path)
        weights = resolve_file(path_or_repo_id, WEIGHTS_NAME, **where)
        model = _build(model_class, config_dict, config_path, strict, weights)
        load_weights(model, weights, strict=strict, allow_nonfinite=allow_nonfinite)
        model.to(map_location)
        model.eval()
        return model

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Save to a temporary directory and publish it (see ``selfvos.hub.publish.push_checkpoint``)."""
        from selfvos.hub.publish import push_checkpoint

        with tempfile.TemporaryDirectory(prefix="selfvos-push-") as tmp:
            return push_checkpoint(self.save_pretrained(Path(tmp) / "checkpoint"), repo_id, **kwargs).location


def _build(model_class: type, config_dict: Dict[str, Any], config_path: Path, strict: bool,
           weights: Optional[Path] = None) -> Any:
    """``model_class(config)`` from the ``config`` object of ``config_path``; a config that does not fit
    (wrong type, unknown key, a value the model refuses) is a ``SelfvosInputError`` naming the file, and so is
    one that describes a model far larger than the ``weights`` file beside it (checked on the meta device
    first, so a damaged config never allocates gigabytes)."""
    try:
        config = from_dict(config_class_of(model_class), config_dict, where=str(config_path))
    except (KeyError, TypeError, ValueError) as err:
        problem = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        problem = str(problem).removeprefix(f"{config_path}: ")
        raise SelfvosInputError(config_path, f"config does not fit {model_class.__name__}: {problem}") from None
    building = _BUILDING_FROM_CHECKPOINT.set(strict)
    try:
        if weights is not None:
            _check_size(model_class, config, config_path, weights)
        return model_class(config)
    except SelfvosInputError:
        raise
    except Exception as err:  # e.g. a negative width: torch refuses it deep inside the constructor
        raise SelfvosInputError(
            config_path, f"{model_class.__name__} cannot be built from this config ({type(err).__name__}: {err})"
        ) from None
    finally:
        _BUILDING_FROM_CHECKPOINT.reset(building)


def _check_size(model_class: type, config: Any, config_path: Path, weights: Path) -> None:
    """Refuse a config whose model needs more than twice the bytes of the weights file (+1 MiB): built on the
    meta device, nothing is allocated; a model that cannot be built there is left to the real build."""
    try:
        with torch.device("meta"):
            probe = model_class(config)
    except Exception:
        return
    need = sum(t.numel() * t.element_size() for t in probe.state_dict().values())
    have = Path(weights).stat().st_size
    if need > 2 * have + (1 << 20):
        raise SelfvosInputError(
            config_path, f"describes a {model_class.__name__} of {need / 2**20:.1f} MiB of tensors but "
            f"{Path(weights).name} holds {have / 2**20:.1f} MiB: config and weights do not belong together")


def remove_stale_staging(target: Path) -> List[Path]:
    """Delete staging folders a killed ``save_pretrained`` left beside ``target``; returns what was removed.

    Those of ``target`` itself (``.<name>.tmp-<hex>``) always go (two saves into one folder at once would
    race anyway); those of other folders in the same parent only when untouched for
    ``STALE_STAGING_SECONDS``, so a save running in another process is left alone.
    """
    removed: List[Path] = []
    if not target.parent.is_dir():
        return removed
    now = time.time()
    for entry in target.parent.iterdir():
        match = _STAGING.match(entry.name)
        if match is None or not entry.is_dir() or entry.is_symlink():
            continue
        try:
            stale = match.group("name") == target.name or now - entry.stat().st_mtime > STALE_STAGING_SECONDS
        except FileNotFoundError:
            continue
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _architecture_class(name: str, config_path: Path) -> type:
    known = architectures()
    if name not in known:
        listed = ", ".join(known) or "(none registered)"
        raise SelfvosInputError(config_path, f"unknown architecture {name!r}; registered: {listed}")
    return known[name]


def from_pretrained(path_or_repo_id: PathOrRepoId, **kwargs: Any) -> Any:
    """Load any registered selfvos model; the class comes from ``config.json``'s ``architecture``."""
    return SelfvosModelMixin.from_pretrained(path_or_repo_id, **kwargs)
