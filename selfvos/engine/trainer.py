"""The training loop on Hugging Face Accelerate, generic over model, objective and dataset.

The objective is any callable ``objective(model, batch) -> {"loss": scalar, other scalar terms...}`` (an
``nn.Module`` when it has trainable parts of its own, e.g. a mask head); ``batch`` is a collated dict of
tensors (see the batch contract in ``selfvos.data.sampling``). Steps count optimizer updates.

Resume is exact: ``save_state`` stores weights, optimizer, scheduler, scaler, RNG and :class:`TrainingState`;
the data position is ``step * grad_accum`` micro-batches into a seeded, epoch-indexed shuffle, restored with
``accelerator.skip_first_batches``; model-side randomness is re-seeded from ``(seed, step, micro, rank)``
before every forward (as fairseq does), so a resumed run draws the same random numbers as an uninterrupted
one. Datasets should derive their own randomness from the index (``set_epoch`` is forwarded to them).

``freeze_bn`` keeps every BatchNorm layer in eval mode for the whole run (fine-tuning with small batches);
``Trainer.export`` writes the model with ``save_pretrained``, the format ``selfvos.from_pretrained`` reads.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import (
    DataLoaderConfiguration, DistributedDataParallelKwargs, GradientAccumulationPlugin, ProjectConfiguration, set_seed,
)
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from selfvos.atomic import replace_dir
from selfvos.config import to_dict
from selfvos.engine.callbacks import Callback
from selfvos.engine.checkpoint import TrainingState, latest_checkpoint, list_checkpoints, step_dir_name
from selfvos.engine.config import TrainConfig, resolve_cpu_threads, resolve_mixed_precision, resolve_tracking_uri
from selfvos.engine.optim import build_optimizer, build_scheduler
from selfvos.engine.tracking import ExperimentTracker
from selfvos.errors import SelfvosInputError
from selfvos.hub.mixin import SelfvosModelMixin

logger = logging.getLogger(__name__)
Batch = Dict[str, torch.Tensor]
Objective = Callable[[nn.Module, Batch], Mapping[str, torch.Tensor]]


class TrainStep(nn.Module):
    """Model + objective as one module, so DDP and autocast wrap every trainable parameter."""

    def __init__(self, model: nn.Module, objective: Optional[Objective] = None) -> None:
        super().__init__()
        self.model = model
        self.objective = objective  # an nn.Module objective registers as a submodule

    def forward(self, batch: Batch) -> Mapping[str, torch.Tensor]:
        out = self.model(batch) if self.objective is None else self.objective(self.model, batch)
        if not isinstance(out, Mapping) or "loss" not in out:
            raise TypeError(f"the objective must return a mapping with a 'loss' entry, got {type(out).__name__}")
        return out


def build_accelerator(cfg: TrainConfig) -> Accelerator:
    """An ``Accelerator`` set up for step-counted training with seeded, resumable data order."""
    accelerator = Accelerator(
        mixed_precision=resolve_mixed_precision(cfg.mixed_precision),
        gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=cfg.grad_accum, sync_with_dataloader=False),
        project_config=ProjectConfiguration(project_dir=cfg.output_dir, automatic_checkpoint_naming=False),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
        step_scheduler_with_optimizer=False,  # we step it once per update, not once per process
        kwargs_handlers=[
            DistributedDataParallelKwargs(
                find_unused_parameters=cfg.find_unused_parameters, static_graph=cfg.static_graph
            )
        ],
    )
    if accelerator.device.type == "cpu":
        local = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
        torch.set_num_threads(resolve_cpu_threads(cfg.cpu_threads, local))
    return accelerator


def _keep_eval(module: nn.Module, args: Any) -> None:
    module.training = False


def freeze_batchnorm(module: nn.Module) -> int:
    """Run every BatchNorm layer of ``module`` in eval mode from now on; returns how many layers there are.

    The layers normalise with their running statistics, which never update; their affine weight and bias
    still train. A forward pre-hook resets ``training`` to False before each forward, so a later
    ``module.train()`` (e.g. after a validation pass) does not unfreeze them; between such a call and the
    next forward the flag reads True, but no forward ever runs in train mode.
    """
    layers = [m for m in module.modules() if isinstance(m, _BatchNorm)]
    for layer in layers:
        layer.eval()
        layer.register_forward_pre_hook(_keep_eval)
    return len(layers)


def step_seed(seed: int, step: int, micro: int, rank: int) -> int:
    """A 32-bit seed for one micro-batch on one process, independent of everything that happened before."""
    return int(np.random.SeedSequence([seed, step, micro, rank]).generate_state(1)[0])


class Trainer:
    """Train ``model`` with ``objective`` on ``dataset``; ``train(num_steps)`` runs one round of steps."""

    def __init__(
        self,
        model: nn.Module,
        dataset: Dataset,
        config: TrainConfig,
        objective: Optional[Objective] = None,
        collate_fn: Optional[Callable] = None,
        callbacks: Sequence[Callback] = (),
        run_config: Optional[Mapping[str, Any]] = None,
        accelerator: Optional[Accelerator] = None,
    ) -> None:
        self.config = config
        self.run_config = dict(run_config or {})
        self.callbacks = list(callbacks)
        self.accelerator = acc = accelerator or build_accelerator(config)
        if acc.step_scheduler_with_optimizer:
            raise ValueError("pass an Accelerator made by build_accelerator(config) (one scheduler step per update)")
        if acc.is_main_process:
            Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        self.state = TrainingState()
        set_seed(config.seed)
        module = TrainStep(model, objective)
        if config.freeze_bn:
            frozen = freeze_batchnorm(module)
            logger.info("freeze_bn: %d BatchNorm layers run in eval mode", frozen)
        optimizer = build_optimizer(module, config)
        scheduler = build_scheduler(optimizer, config)
        loader = DataLoader(
            dataset, batch_size=config.batch_size, shuffle=True, drop_last=True, collate_fn=collate_fn,
            num_workers=config.num_workers, pin_memory=torch.cuda.is_available(),
        )
        self.module, self.optimizer, self.scheduler, self.loader = acc.prepare(module, optimizer, scheduler, loader)
        if len(self.loader) == 0:
            raise ValueError(
                f"dataset of {len(dataset)} items gives no full batch of "
                f"{config.batch_size} x {acc.num_processes} processes"
            )
        acc.register_for_checkpointing(self.state)
        self._resume()
        uri = resolve_tracking_uri(config.tracking_uri, config.output_dir)
        self.tracker = ExperimentTracker(
            uri, config.experiment, config.run_name, run_id=self.state.run_id or None, enabled=acc.is_main_process
        )
        self.state.run_id = self.tracker.run_id
        self.tracker.log_params({"train": to_dict(config), **self.run_config})

    def _resume(self) -> None:
        cfg = self.config
        if cfg.resume is None:
            return
        path = latest_checkpoint(cfg.checkpoint_root) if cfg.resume == "auto" else Path(cfg.resume)
        if path is None:
            return
        if not path.is_dir():
            raise SelfvosInputError(path, "resume checkpoint folder not found")
        self.accelerator.load_state(str(path))
        # save_state/load_state do not restore the checkpoint counter (BRIEF section 6)
        self.accelerator.project_configuration.iteration = len(list_checkpoints(cfg.checkpoint_root))
        self._apply_schedule()
        logger.info("resumed from %s at step %d, round %d", path, self.state.step, self.state.round)

    def _apply_schedule(self) -> None:
        """Set every group's lr from this config's schedule at the resumed step.

        The optimizer state holds the lr of the run that saved it; a run extended with a larger ``max_steps``
        (a finished run trained on) continues on the schedule stretched over the new length instead (a warm
        restart for cosine). With an unchanged config this rewrites the same values, so resume stays exact.
        """
        scheduler = self.scheduler.scheduler
        for group, base, factor in zip(self.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group["lr"] = base * factor(scheduler.last_epoch)

    def _batches(self, start: int) -> Iterator[Batch]:
        """Endless micro-batches starting ``start`` micro-batches into the seeded epoch sequence."""
        epoch, offset = divmod(start, len(self.loader))
        while True:
            self.state.epoch = epoch
            self.loader.set_epoch(epoch)  # seeds this epoch's shuffle; also calls dataset.set_epoch if any
            loader = self.accelerator.skip_first_batches(self.loader, offset) if offset else self.loader
            yield from loader
            epoch, offset = epoch + 1, 0

    def train(self, num_steps: Optional[int] = None) -> Dict[str, float]:
        """Train until ``round_start + num_steps`` (or ``max_steps``), then end the round; returns the last metrics."""
        cfg, st = self.config, self.state
        self.module.train()
        for callback in self.callbacks:
            callback.on_train_start(self)
        if st.step >= cfg.max_steps and st.round_start >= cfg.max_steps:
            return {}  # training already finished (e.g. a resumed run that had completed)
        target = cfg.max_steps if num_steps is None else min(cfg.max_steps, st.round_start + num_steps)
        batches = self._batches(st.step * cfg.grad_accum)
        quiet = {} if self.accelerator.is_main_process else {"disable": True}  # main: TQDM_DISABLE still applies
        bar = tqdm(total=target, initial=st.step, desc=f"round {st.round}", **quiet)
        metrics: Dict[str, float] = {}
        try:
            while st.step < target:
                metrics = self._update(batches)
                st.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}")
                if st.step % cfg.log_every == 0 or st.step == target:
                    self.tracker.log_metrics(metrics, st.step)
                if cfg.save_every and st.step % cfg.save_every == 0 and st.step < target:
                    self.save_state()
                for callback in self.callbacks:
                    callback.on_step_end(self, metrics)
        finally:
            bar.close()
            batches.close()
        for callback in self.callbacks:
            callback.on_round_end(self, st.round)
        st.round, st.round_start = st.round + 1, st.step
        self.save_state()
        return metrics

    def _update(self, batches: Iterator[Batch]) -> Dict[str, float]:
        """One optimizer update over ``grad_accum`` micro-batches; returns process-averaged metrics."""
        acc, cfg = self.accelerator, self.config
        sums: Dict[str, torch.Tensor] = {}
        lrs = {f"lr/{g.get('name', i)}": float(g["lr"]) for i, g in enumerate(self.optimizer.param_groups)}
        grad_norm = None
        for micro in range(cfg.grad_accum):
            batch = next(batches)
            set_seed(step_seed(cfg.seed, self.state.step, micro, acc.process_index))
            with acc.accumulate(self.module):
                out = self.module(batch)
                acc.backward(out["loss"])
                if acc.sync_gradients and cfg.grad_clip is not None:
                    grad_norm = acc.clip_grad_norm_(self.module.parameters(), cfg.grad_clip)
                self.optimizer.step()
                if acc.sync_gradients and not acc.optimizer_step_was_skipped:
                    self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            for key, value in out.items():
                if torch.is_tensor(value) and value.numel() == 1:
                    sums[key] = sums.get(key, 0.0) + value.detach().float().reshape(())
        keys = sorted(sums)
        means = acc.reduce(torch.stack([sums[k] for k in keys]) / cfg.grad_accum, reduction="mean")
        metrics = dict(zip(keys, means.tolist()))
        metrics.update(lrs)
        if grad_norm is not None:
            metrics["grad_norm"] = float(grad_norm)
        return metrics

    def save_state(self) -> Path:
        """Write a resumable checkpoint ``checkpoints/step_XXXXXXX`` (partial folder first, then renamed)."""
        acc, root = self.accelerator, self.config.checkpoint_root
        final = root / step_dir_name(self.state.step)
        partial = root / f"{final.name}.partial"
        if acc.is_main_process:
            root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(partial, ignore_errors=True)
        acc.wait_for_everyone()
        acc.save_state(str(partial))
        acc.wait_for_everyone()
        if acc.is_main_process:
            replace_dir(partial, final)
            keep = self.config.keep_checkpoints
            for _, old in list_checkpoints(root)[: -keep] if keep else []:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    def export(self, directory: Union[str, Path, None] = None) -> Path:
        """Save the trained model with ``save_pretrained`` into ``directory`` (default ``<output_dir>/export``).

        The folder holds ``config.json`` + ``model.safetensors`` and loads with ``selfvos.from_pretrained``;
        the objective is not saved (heads that must survive belong to the model). Main process writes.
        """
        acc = self.accelerator
        directory = Path(directory or Path(self.config.output_dir) / "export")
        model = acc.unwrap_model(self.module).model
        if not isinstance(model, SelfvosModelMixin):
            raise TypeError(
                f"Trainer.export saves with save_pretrained; {type(model).__name__} is not a "
                "selfvos.hub.SelfvosModelMixin"
            )
        acc.wait_for_everyone()
        if acc.is_main_process:
            model.save_pretrained(directory)
        acc.wait_for_everyone()
        return directory

    def log_round_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Per-round quality (e.g. pseudo-label J on held-out videos) as ``round/<name>`` at step = round index."""
        self.tracker.log_metrics({f"round/{k}": v for k, v in metrics.items()}, step=self.state.round)

    def close(self, status: str = "FINISHED") -> None:
        """Finish the MLflow run."""
        self.tracker.finish(status)
