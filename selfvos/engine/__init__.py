"""Training engine: the Accelerate loop, optimizer groups and schedules, callbacks, checkpoints and MLflow tracking.

Generic over the model and the objective: anything with ``objective(model, batch) -> {"loss": ...}``
trains here, on one CPU, one GPU or many processes, with exact resume; a trained ``SelfvosModelMixin``
model is exported with ``save_pretrained`` (``Trainer.export``, ``EvalCallback``'s best model).
"""
from selfvos.engine.callbacks import Callback, EvalCallback
from selfvos.engine.checkpoint import (
    TrainingState, latest_checkpoint, latest_intact_checkpoint, list_checkpoints, verify_checkpoint,
)
from selfvos.engine.config import TrainConfig, resolve_mixed_precision, resolve_tracking_uri
from selfvos.engine.optim import build_optimizer, build_scheduler, lr_factor, parameter_groups
from selfvos.engine.tracking import ExperimentTracker, flatten_params
from selfvos.engine.trainer import Trainer, TrainStep, build_accelerator, freeze_batchnorm

__all__ = [
    "Callback",
    "EvalCallback",
    "ExperimentTracker",
    "TrainConfig",
    "TrainStep",
    "Trainer",
    "TrainingState",
    "build_accelerator",
    "build_optimizer",
    "build_scheduler",
    "flatten_params",
    "freeze_batchnorm",
    "latest_checkpoint",
    "latest_intact_checkpoint",
    "list_checkpoints",
    "lr_factor",
    "parameter_groups",
    "resolve_mixed_precision",
    "resolve_tracking_uri",
    "verify_checkpoint",
]
