"""``TrainConfig``: every knob of the training engine, as one typed dataclass.

It round-trips through ``selfvos.config.to_dict/from_dict`` and takes dotted overrides
(``--train.max_steps 100``) like every other selfvos config. Two values are resolved at run time:
``mixed_precision="auto"`` (from the hardware) and ``tracking_uri="auto"`` (from ``output_dir``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

SCHEDULES = ("cosine", "linear", "poly", "constant")
OPTIMIZERS = ("adamw", "sgd")
MIXED_PRECISIONS = ("auto", "no", "fp16", "bf16")


@dataclass
class TrainConfig:
    """Optimisation, precision, checkpointing and tracking settings for one training run.

    Steps count optimizer updates; one update sees ``batch_size * num_processes * grad_accum`` clips.
    ``sync_batchnorm`` converts every BatchNorm layer to ``torch.nn.SyncBatchNorm`` before ``prepare`` when more
    than one process trains, so the statistics are those of the global batch; one process is left untouched.
    ``max_minutes`` ends a ``train()`` call early, cleanly, when its next step would end past that many minutes
    of wall-clock time (see ``Trainer.train``); the step count and the schedule still follow ``max_steps``.
    """

    max_steps: int = 1000
    batch_size: int = 8  # per process, per micro-batch
    grad_accum: int = 1
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 1e-4
    backbone_lr_ratio: float = 1.0  # backbone parameters train at lr * backbone_lr_ratio
    backbone_keys: Tuple[str, ...] = ("backbone",)  # parameters under a module of one of these names are backbone
    weight_decay: float = 0.05  # never applied to biases and norm parameters
    betas: Tuple[float, float] = (0.9, 0.999)  # adamw
    momentum: float = 0.9  # sgd (no Nesterov)
    warmup_steps: int = 0
    schedule: str = "cosine"  # cosine | linear | poly | constant
    min_lr_ratio: float = 0.0  # the schedule decays to lr * min_lr_ratio at max_steps
    poly_power: float = 0.9  # exponent of the poly schedule
    freeze_bn: bool = False  # BatchNorm layers stay in eval mode: running statistics frozen, affine still trains
    sync_batchnorm: bool = False  # >1 process: BatchNorm statistics over the global batch (SyncBatchNorm, GPUs only)
    find_unused_parameters: bool = False  # DDP: allow parameters that get no gradient in a step
    static_graph: bool = False  # DDP: the set of used parameters is the same in every step
    mixed_precision: str = "auto"  # auto | no | fp16 | bf16
    grad_clip: Optional[float] = 1.0  # max global L2 norm; None = no clipping
    max_nonfinite_steps: int = 20  # stop after this many updates in a row with a NaN/inf loss or gradient; 0 = never
    max_minutes: float | None = None  # wall-clock limit of one train() call (one recipe round); None = steps decide
    seed: int = 0
    num_workers: int = 0
    cpu_threads: Optional[int] = None  # torch threads per process on CPU; None = cores / local processes
    log_every: int = 10
    save_every: int = 0  # optimizer steps between resumable checkpoints; 0 = only at the end of a round
    keep_checkpoints: Optional[int] = None  # keep only the newest N resumable checkpoints; None = all
    output_dir: str = "runs/pretrain"
    resume: Optional[str] = "auto"  # "auto" = newest checkpoint in output_dir if any | a checkpoint dir | None
    tracking_uri: Optional[str] = "auto"  # "auto" = $MLFLOW_TRACKING_URI or sqlite:///<output_dir>/mlflow.db
    experiment: str = "selfvos"
    run_name: Optional[str] = None

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"train.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"train.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.mixed_precision not in MIXED_PRECISIONS:
            raise ValueError(f"train.mixed_precision must be one of {MIXED_PRECISIONS}, got {self.mixed_precision!r}")
        for name in ("max_steps", "batch_size", "grad_accum", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "save_every", "num_workers", "max_nonfinite_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.max_minutes is not None and not 0 < self.max_minutes < float("inf"):
            raise ValueError(f"train.max_minutes must be a positive number of minutes or None, got {self.max_minutes}")
        if self.sync_batchnorm and self.freeze_bn:
            raise ValueError(
                "train.sync_batchnorm and train.freeze_bn conflict: frozen BatchNorm layers normalise with their "
                "running statistics, so there are no batch statistics to synchronise; set one of them to false"
            )
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"train.grad_clip must be > 0 or None, got {self.grad_clip}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"train.momentum must be in [0, 1), got {self.momentum}")
        if self.poly_power <= 0:
            raise ValueError(f"train.poly_power must be > 0, got {self.poly_power}")
        if isinstance(self.backbone_keys, str):
            raise ValueError(f"train.backbone_keys must be a tuple of module names, not {self.backbone_keys!r}")
        self.backbone_keys = tuple(self.backbone_keys)
        bad = [k for k in self.backbone_keys if not isinstance(k, str) or "" in k.split(".")]
        if bad:
            raise ValueError(f"train.backbone_keys must be module names ('backbone', 'encoder.backbone'), got {bad}")

    @property
    def checkpoint_root(self) -> Path:
        """Folder holding the resumable ``step_XXXXXXX`` checkpoints."""
        return Path(self.output_dir) / "checkpoints"


def resolve_mixed_precision(choice: str) -> str:
    """``"auto"`` -> ``"bf16"`` on GPUs that support it, ``"fp16"`` on other GPUs, ``"no"`` on CPU."""
    if choice != "auto":
        return choice
    import torch

    if not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def resolve_cpu_threads(threads: Optional[int], local_processes: int) -> int:
    """Threads for one CPU training process: ``threads``, or the machine's cores shared evenly.

    ``accelerate launch`` exports ``OMP_NUM_THREADS=1`` when the user did not set it, which would leave a
    single-process CPU run on one core; the engine sets torch's thread count explicitly instead.
    """
    if threads is not None:
        if threads < 1:
            raise ValueError(f"train.cpu_threads must be >= 1, got {threads}")
        return threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, local_processes))


def resolve_tracking_uri(uri: Optional[str], output_dir: str) -> Optional[str]:
    """``None`` disables tracking; ``"auto"`` -> ``$MLFLOW_TRACKING_URI`` or a sqlite file in ``output_dir``.

    MLflow 3 refuses a plain ``./mlruns`` folder store, so the default is a sqlite database.
    """
    if uri != "auto":
        return uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(Path(output_dir) / 'mlflow.db').resolve()}"
