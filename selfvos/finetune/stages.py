"""Training stages driven by the step counter: the pseudo-video stage, then videos with a growing frame skip.

:class:`StagedDataset` serves the items of ONE of its datasets, chosen by ``stage`` (a shared-memory
integer, so DataLoader workers see changes); its length is the longest dataset's and an index wraps around
a shorter one. :class:`StageSchedule` is the trainer callback that sets the stage and the video stage's
``max_skip`` (:class:`~selfvos.data.sampling.SkipCurriculum`) from ``trainer.state.step`` before every step,
so a resumed run sets exactly what the uninterrupted run had at that step.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import torch
from torch.utils.data import Dataset

from selfvos.data.sampling import SkipCurriculum
from selfvos.engine.callbacks import Callback


class StagedDataset(Dataset):
    """The items of ``datasets[stage]``; ``set_epoch`` reaches every dataset."""

    def __init__(self, datasets: Sequence[Dataset]) -> None:
        if not datasets:
            raise ValueError("StagedDataset needs at least one dataset")
        self.datasets = list(datasets)
        self._stage = torch.zeros(1, dtype=torch.int64).share_memory_()

    @property
    def stage(self) -> int:
        return int(self._stage[0])

    @stage.setter
    def stage(self, value: int) -> None:
        if not 0 <= value < len(self.datasets):
            raise ValueError(f"stage must be in 0..{len(self.datasets) - 1}, got {value}")
        self._stage[0] = int(value)

    def __len__(self) -> int:
        return max(len(d) for d in self.datasets)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        dataset = self.datasets[self.stage]
        return dataset[index % len(dataset)]

    def set_epoch(self, epoch: int) -> None:
        for dataset in self.datasets:
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)


class StageSchedule(Callback):
    """Stage 0 for the first ``first_stage_steps`` steps, then stage 1 with ``curriculum`` over the rest."""

    def __init__(self, dataset: StagedDataset, first_stage_steps: int,
                 curriculum: Optional[SkipCurriculum] = None) -> None:
        self.dataset, self.first_stage_steps, self.curriculum = dataset, first_stage_steps, curriculum

    def apply(self, step: int) -> None:
        """Set the stage (and the skip) that the batch of optimizer step ``step`` is drawn with."""
        video_stage = len(self.dataset.datasets) > 1 and step >= self.first_stage_steps
        self.dataset.stage = 1 if video_stage else 0
        if video_stage and self.curriculum is not None:
            self.curriculum.apply(self.dataset.datasets[1], step - self.first_stage_steps)

    def on_train_start(self, trainer: Any) -> None:
        self.apply(trainer.state.step)

    def on_step_end(self, trainer: Any, metrics: Dict[str, float]) -> None:
        self.apply(trainer.state.step)
