"""Training engine: the Accelerate loop, optimizer groups and schedules, checkpoints and MLflow tracking.

Generic over the model and the objective: anything with ``objective(model, batch) -> {"loss": ...}``
trains here, on one CPU, one GPU or many processes, with exact resume and atomic exports.
"""
from selfvos.engine.checkpoint import (
    ExportedCheckpoint,
    TrainingState,
    export_modules,
    latest_checkpoint,
    list_checkpoints,
    load_exported,
)
from selfvos.engine.config import TrainConfig, resolve_mixed_precision, resolve_tracking_uri
from selfvos.engine.optim import build_optimizer, build_scheduler, lr_factor, parameter_groups
from selfvos.engine.tracking import ExperimentTracker, flatten_params
from selfvos.engine.trainer import Callback, Trainer, TrainStep, build_accelerator

__all__ = [
    "Callback",
    "ExperimentTracker",
    "ExportedCheckpoint",
    "TrainConfig",
    "TrainStep",
    "Trainer",
    "TrainingState",
    "build_accelerator",
    "build_optimizer",
    "build_scheduler",
    "export_modules",
    "flatten_params",
    "latest_checkpoint",
    "list_checkpoints",
    "load_exported",
    "lr_factor",
    "parameter_groups",
    "resolve_mixed_precision",
    "resolve_tracking_uri",
]
