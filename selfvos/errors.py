"""Errors that name the offending file and the problem, so bad input is never silently wrong.

Every error selfvos raises on purpose is a :class:`SelfvosError` whose ``str`` is ``"<path>: <problem>"``
(``path`` is a file, a folder or an option name); the CLI prints these as one line, without a traceback.
"""
from __future__ import annotations

import os
from typing import Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


class SelfvosError(Exception):
    """A failure selfvos explains itself: ``str(err)`` is ``"<path>: <problem>"``."""

    def __init__(self, path: PathLike, problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class SelfvosInputError(SelfvosError, ValueError):
    """Bad user input: ``str(err)`` is ``"<path>: <problem>"``."""


class NonFiniteWeightsError(SelfvosInputError):
    """Weights holding NaN or inf, refused for loading, saving, exporting or relabeling.

    ``path`` is the weights file read or the folder that would have been written; ``tensor`` names the first
    offending tensor (``""`` when it sits on another process).
    """

    def __init__(self, path: PathLike, problem: str, tensor: str = "") -> None:
        self.tensor = tensor
        super().__init__(path, problem)


class TrainingDiverged(SelfvosError, RuntimeError):
    """``train.max_nonfinite_steps`` consecutive updates had a non-finite loss or gradient norm: the run stopped.

    ``path`` is the run's output folder; ``step`` the last step tried, ``consecutive`` how many updates in a
    row were skipped and ``checkpoint`` the newest intact checkpoint (None when none was written yet).
    """

    def __init__(self, path: PathLike, problem: str, *, step: int, consecutive: int,
                 checkpoint: Optional[PathLike]) -> None:
        self.step, self.consecutive = step, consecutive
        self.checkpoint = os.fspath(checkpoint) if checkpoint is not None else None
        super().__init__(path, problem)
