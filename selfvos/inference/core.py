"""The inference-core protocol and the registry from a model's architecture to the core that runs it.

A model holds weights only. Everything a video needs while it is being segmented (memories, caches, object
ids) lives in an inference core (Cutie's ``InferenceCore``), made per video by the factory registered for the
model's architecture::

    @CORES.register("stm")
    def stm_core(model, task, options): return STMInferenceCore(model, **options.get("head", {}))

    core = create_core(model, "one-shot", {"head": {"memory_every": 5}})
    probs = core.step(frame0, mask=first_mask)     # (K+1, H, W), channel 0 = background
    probs = core.step(frame1)                      # objects in core.object_ids order

``options`` is a plain mapping: ``"zero_shot"`` / ``"one_shot"`` (the label-free pipeline's
``ZeroShotConfig`` / ``OneShotConfig``) and ``"head"`` (keyword overrides of a head's inference settings);
each factory reads what it knows. This module never imports a method: heads and the MuG pipeline register
their factories where they are defined.
"""
from __future__ import annotations

from typing import Any, Callable, List, Mapping, Optional, Protocol, runtime_checkable

import numpy as np
import torch

from selfvos.errors import SelfvosInputError
from selfvos.registry import CORES

TASKS = ("zero-shot", "one-shot")


@runtime_checkable
class InferenceCore(Protocol):
    """Per-video state + the step that segments the next frame."""

    @property
    def object_ids(self) -> List[int]:
        """Object id of each probability channel after the background."""

    def reset(self) -> None:
        """Forget the current video."""

    def step(self, frame: np.ndarray, mask: Optional[np.ndarray] = None) -> torch.Tensor:
        """(H, W, 3) uint8 RGB [+ (H, W) uint8 ids] -> (K+1, H, W) float probabilities (channel 0 = background)."""


CoreFactory = Callable[[Any, str, Mapping[str, Any]], InferenceCore]  # what CORES maps architectures to


def architecture_of(model: Any) -> str:
    """The registered architecture name of a model (``type(model).architecture``)."""
    name = getattr(type(model), "architecture", None)
    if not isinstance(name, str):
        raise SelfvosInputError(type(model).__name__, "not a selfvos model (it has no architecture name)")
    return name


def supported_tasks(model: Any) -> tuple:
    """The tasks a model's core can run: a head's ``tasks`` class attribute, else both."""
    return tuple(getattr(type(model), "tasks", TASKS))


def inference_settings(model: Any, options: Mapping[str, Any]) -> Any:
    """A head's ``model.config.inference`` dataclass with fields overridden by ``options["head"]``; an unknown
    field or a rejected value is a :class:`SelfvosInputError` listing the known fields."""
    import dataclasses

    inference = model.config.inference
    overrides = dict(options.get("head") or {})
    known = {f.name for f in dataclasses.fields(inference)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise SelfvosInputError("head options", f"{type(model).__name__} has no inference setting(s) {unknown}; "
                                                f"known: {sorted(known)}")
    try:
        return dataclasses.replace(inference, **overrides)
    except (TypeError, ValueError) as err:
        raise SelfvosInputError("head options", f"{type(model).__name__}: {err}") from None


def create_core(model: Any, task: str, options: Optional[Mapping[str, Any]] = None) -> InferenceCore:
    """A fresh core for ``model`` running ``task`` (``"zero-shot"`` or ``"one-shot"``)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    name = architecture_of(model)
    if task not in supported_tasks(model):
        raise SelfvosInputError(name, f"the {name} model runs {' / '.join(supported_tasks(model))} only, not {task}"
                                      + (" (give a first-frame mask)" if task == "zero-shot" else " (give no mask)"))
    if name not in CORES:
        raise SelfvosInputError(name, f"no inference core is registered for architecture {name!r}; "
                                      f"registered: {', '.join(CORES.names()) or '(none)'}")
    return CORES.get(name)(model, task, dict(options or {}))
