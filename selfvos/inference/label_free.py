"""Inference cores of the pretrained MuG model (no supervised head): label propagation and zero-shot.

Registered for architecture ``"mug"``: one-shot runs :class:`~selfvos.inference.one_shot.OneShotPropagator`
on the model's features (``options["one_shot"]``, a ``OneShotConfig``), zero-shot runs
:class:`~selfvos.inference.zero_shot.ZeroShotSegmenter` (``options["zero_shot"]``, a ``ZeroShotConfig``).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from selfvos.registry import CORES


def one_shot_core(model: Any, config: Optional[Any] = None) -> Any:
    """Label propagation of the first mask on the model's features."""
    from selfvos.inference.one_shot import OneShotConfig, OneShotPropagator

    return OneShotPropagator(model, config or OneShotConfig())


def zero_shot_core(model: Any, config: Optional[Any] = None) -> Any:
    """Frame head + co-attention references + motion cue + GrabCut."""
    from selfvos.inference.zero_shot import ZeroShotConfig, ZeroShotSegmenter

    return ZeroShotSegmenter(model, config or ZeroShotConfig())


@CORES.register("mug")
def mug_core(model: Any, task: str, options: Mapping[str, Any]) -> Any:
    """One-shot label propagation or the zero-shot pipeline on a pretrained MuG model."""
    if task == "one-shot":
        return one_shot_core(model, options.get("one_shot"))
    return zero_shot_core(model, options.get("zero_shot"))
