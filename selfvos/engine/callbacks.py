"""Trainer callbacks: the hook interface and ``EvalCallback`` (periodic validation + best-model export).

``EvalCallback`` runs ``evaluate(model) -> {name: float}`` with the trained model (``Trainer.full_model``) in
eval mode under ``torch.inference_mode()``: on the main process only, or with ``distributed=True`` on every
process at once (``evaluate`` splits its work across the processes and gathers the results, e.g.
``selfvos.finetune.validation.segmentation_scores(..., accelerator=...)``). The main process's metrics and
its decision whether they improve on the best are sent to every process; only the main process logs
``val/<name>`` to the tracker and, when ``metrics[metric]`` improves, saves the model with
``save_pretrained(best_dir)`` next to ``best.json``::

    {"metric": "J&F", "value": 0.71, "step": 1200, "metrics": {"J": 0.69, "F": 0.73, "J&F": 0.71}}

``best.json`` is read back on construction and at every ``train()`` start, so the best survives a resume.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional, Tuple, Union

import torch
from accelerate.utils import broadcast_object_list, gather_object
from torch import nn

from selfvos.atomic import atomic_write_json
from selfvos.errors import SelfvosInputError
from selfvos.hub.mixin import SelfvosModelMixin

if TYPE_CHECKING:
    from selfvos.engine.trainer import Trainer

logger = logging.getLogger(__name__)
BEST_NAME = "best.json"
MODES = ("max", "min")


class Callback:
    """Hooks the trainer calls on every process; override the ones you need."""

    def on_train_start(self, trainer: "Trainer") -> None:
        """At the start of every ``train()`` call, after resume (``trainer.state.step`` is the current step)."""

    def on_step_end(self, trainer: "Trainer", metrics: Dict[str, float]) -> None:
        """After optimizer update ``trainer.state.step`` (metrics already averaged over processes)."""

    def on_round_end(self, trainer: "Trainer", round_index: int) -> None:
        """After the last step of a ``train(num_steps)`` segment, before the round counter moves on
        (where a bootstrapping driver relabels its videos)."""


Evaluate = Callable[[nn.Module], Mapping[str, float]]


class EvalCallback(Callback):
    """Evaluate every ``every`` optimizer steps and after the last step of each ``train()`` call.

    ``every=0`` evaluates only after the last step. ``mode`` says whether a larger (``"max"``) or smaller
    (``"min"``) ``metrics[metric]`` is better; ties do not count as improvements. ``best_dir`` defaults to
    ``<output_dir>/best``. ``best`` is ``(value, step)`` of the best evaluation so far (None before the
    first), identical on every process; ``last_metrics`` holds the latest evaluation's metrics.
    The trained model must be a ``SelfvosModelMixin`` (it is saved with ``save_pretrained``).
    ``distributed``: ``evaluate`` runs on every process and must call the same collectives on each (a process
    that fails inside it must still take part in them, as ``segmentation_scores`` does); a failure on any
    process after it returns stops every process.
    """

    def __init__(
        self,
        evaluate: Evaluate,
        every: int,
        metric: str,
        mode: str = "max",
        best_dir: Union[str, Path, None] = None,
        distributed: bool = False,
    ) -> None:
        if not callable(evaluate):
            raise TypeError(f"EvalCallback evaluate must be callable, got {type(evaluate).__name__}")
        if not isinstance(every, int) or every < 0:
            raise ValueError(f"EvalCallback every must be an int >= 0 (0 = only after the last step), got {every!r}")
        if mode not in MODES:
            raise ValueError(f"EvalCallback mode must be one of {MODES}, got {mode!r}")
        self.evaluate = evaluate
        self.every = every
        self.metric = metric
        self.mode = mode
        self.distributed = distributed
        self.best_dir: Optional[Path] = Path(best_dir) if best_dir is not None else None
        self.best: Optional[Tuple[float, int]] = None
        self.last_metrics: Dict[str, float] = {}
        self._start_step = 0
        self._last_step: Optional[int] = None
        if self.best_dir is not None:
            self._read_best()

    def on_train_start(self, trainer: "Trainer") -> None:
        if self.best_dir is None:
            self.best_dir = Path(trainer.config.output_dir) / "best"
        self._read_best()
        model = trainer.accelerator.unwrap_model(trainer.module).model
        if not isinstance(model, SelfvosModelMixin):
            raise TypeError(
                f"EvalCallback saves the best model with save_pretrained; {type(model).__name__} is not a "
                "selfvos.hub.SelfvosModelMixin"
            )
        self._start_step = trainer.state.step

    def on_step_end(self, trainer: "Trainer", metrics: Dict[str, float]) -> None:
        if self.every and trainer.state.step % self.every == 0:
            self.run(trainer)

    def on_round_end(self, trainer: "Trainer", round_index: int) -> None:
        if trainer.state.step > self._start_step:
            self.run(trainer)

    def run(self, trainer: "Trainer") -> Dict[str, float]:
        """Evaluate now (once per step: a second call at the same step returns the earlier metrics)."""
        step = trainer.state.step
        if step == self._last_step:
            return self.last_metrics
        acc = trainer.accelerator
        acc.wait_for_everyone()
        model = trainer.full_model()  # every process: under FSDP this gathers the weights
        metrics, error = None, None
        if self.distributed or acc.is_main_process:
            try:
                metrics = self._evaluate(model)
            except Exception as err:  # tell the other processes instead of leaving them waiting
                error = err
        metrics, improves = self._agree(acc, metrics, error, step)
        self._last_step, self.last_metrics = step, metrics
        trainer.tracker.log_metrics({f"val/{k}": v for k, v in metrics.items()}, step)  # enabled on main only
        if acc.is_main_process:
            logger.info("step %d validation: %s", step, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        if improves:
            value = metrics[self.metric]
            # every process refuses together (the main one alone would leave the others waiting)
            trainer.check_finite_weights(self.best_dir, "save the best model", model)
            self.best = (value, step)
            if acc.is_main_process:
                self._save_best(model, value, step, metrics)
                logger.info("new best %s=%.4f at step %d -> %s", self.metric, value, step, self.best_dir)
        acc.wait_for_everyone()
        return metrics

    def _agree(self, acc: Any, metrics: Optional[Dict[str, float]], error: Optional[BaseException],
               step: int) -> Tuple[Dict[str, float], bool]:
        """``(main process's metrics, whether they improve on the best)`` on every process; a failure on any
        evaluating process is raised on every process (the failing one raises its own error)."""
        if self.distributed and acc.num_processes > 1:
            problems = gather_object([None if error is None else f"{type(error).__name__}: {error}"])
            failed = [(rank, why) for rank, why in enumerate(problems) if why is not None]
            if failed:  # every process stops here, before any other collective
                if error is not None:
                    raise error
                raise RuntimeError(f"evaluation at step {step} failed on process {failed[0][0]}: {failed[0][1]}")
        payload: list = [None]
        if acc.is_main_process:
            payload[0] = (metrics, self._improves(metrics[self.metric])) if error is None else \
                f"{type(error).__name__}: {error}"
        broadcast_object_list(payload)  # every process learns the metrics and the main process's decision
        if error is not None:
            raise error
        if isinstance(payload[0], str):
            raise RuntimeError(f"evaluation at step {step} failed on the main process: {payload[0]}")
        return payload[0]

    def _evaluate(self, model: nn.Module) -> Dict[str, float]:
        """``evaluate(model)`` in eval mode under inference mode; the model's train/eval mode is restored."""
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                raw = self.evaluate(model)
        finally:
            model.train(was_training)  # frozen BatchNorm layers stay in eval mode (see freeze_batchnorm)
        if not isinstance(raw, Mapping):
            raise TypeError(f"EvalCallback evaluate must return a dict of floats, got {type(raw).__name__}")
        metrics = {str(k): float(v) for k, v in raw.items()}
        if self.metric not in metrics:
            raise KeyError(f"EvalCallback metric {self.metric!r} is not among the evaluated metrics {sorted(metrics)}")
        return metrics

    def _improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        return value > self.best[0] if self.mode == "max" else value < self.best[0]

    def _save_best(self, model: nn.Module, value: float, step: int, metrics: Dict[str, float]) -> None:
        """Weights first, then ``best.json`` (each file replaced atomically)."""
        model.save_pretrained(self.best_dir)
        record = {"metric": self.metric, "value": value, "step": step, "metrics": metrics}
        atomic_write_json(self.best_dir / BEST_NAME, record, sort_keys=False, newline=True)

    def _read_best(self) -> None:
        """Restore ``best`` from ``best_dir/best.json`` when it exists."""
        path = self.best_dir / BEST_NAME
        if not path.is_file():
            return
        try:
            record = json.loads(path.read_text())
            metric, value, step = record["metric"], float(record["value"]), int(record["step"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise SelfvosInputError(path, f"not a best-model record ({type(err).__name__}: {err})") from None
        if metric != self.metric:
            raise SelfvosInputError(
                path, f"records the best {metric!r}, but this EvalCallback tracks {self.metric!r}; use another best_dir"
            )
        self.best = (value, step)
