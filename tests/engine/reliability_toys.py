"""Toys for the non-finite guard tests (issue 19): an objective that poisons chosen steps with NaN, on every
process or on one, and a callback that tells it the step and records the weights after every step.
Imported by ``test_reliability_nonfinite.py`` and the DDP worker ``ddp_nonfinite_worker.py``."""
from __future__ import annotations

from typing import Dict, Iterable, Optional

import torch
from tests.engine.engine_toys import ToyObjective, flat_weights

from selfvos.engine import Callback

NAN = float("nan")


class NaNGradient(torch.autograd.Function):
    """Identity forward, NaN gradient backward: a finite loss whose gradient is not."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad * NAN


class PoisonedObjective(ToyObjective):
    """``ToyObjective`` poisoned at the optimizer steps in ``steps`` and at every step from ``start`` on
    (1-based; 0 = never): ``mode="input"`` feeds NaN frames through the model (loss NaN, BatchNorm running
    statistics poisoned), ``mode="grad"`` makes only the gradient NaN, ``mode="loss"`` only the loss (a NaN
    constant added: the gradient stays finite). ``only_rank`` poisons one process.
    ``step`` and ``rank`` are kept current by :class:`FeedStep`, so the poisoning survives a resume."""

    def __init__(self, steps: Iterable[int] = (), mode: str = "input", start: int = 0,
                 only_rank: Optional[int] = None) -> None:
        super().__init__()
        self.steps, self.mode, self.start, self.only_rank = set(steps), mode, start, only_rank
        self.step, self.rank = 0, 0

    def poisoned(self) -> bool:
        due = self.step in self.steps or bool(self.start and self.step >= self.start)
        return due and self.only_rank in (None, self.rank)

    def forward(self, model, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        if self.poisoned() and self.mode == "input":
            batch = {**batch, "frames": batch["frames"] * NAN}
        out = super().forward(model, batch)
        if self.poisoned() and self.mode == "grad":
            out = {**out, "loss": NaNGradient.apply(out["loss"])}
        if self.poisoned() and self.mode == "loss":
            out = {**out, "loss": out["loss"] + NAN}
        return out


class FeedStep(Callback):
    """Tells the objective which step comes next on which process; ``after[step] = (weights, metrics)``."""

    def __init__(self, objective: PoisonedObjective, model: torch.nn.Module) -> None:
        self.objective, self.model, self.after = objective, model, {}

    def on_train_start(self, trainer) -> None:
        self.objective.step = trainer.state.step + 1
        self.objective.rank = trainer.accelerator.process_index

    def on_step_end(self, trainer, metrics) -> None:
        self.after[trainer.state.step] = (flat_weights(self.model), dict(metrics))
        self.objective.step = trainer.state.step + 1
