"""The training loop on Hugging Face Accelerate, generic over model, objective and dataset.

The objective is any callable ``objective(model, batch) -> {"loss": scalar, other scalar terms...}`` (an
``nn.Module`` when it has trainable parts of its own, e.g. a mask head); ``batch`` is a collated dict of
tensors (see the batch contract in ``selfvos.data.sampling``). Steps count optimizer updates.

Resume is exact: ``save_state`` stores weights, optimizer, scheduler, scaler, RNG and :class:`TrainingState`;
the data position is ``step * grad_accum`` micro-batches into a seeded, epoch-indexed shuffle, restored with
``accelerator.skip_first_batches``; model-side randomness is re-seeded from ``(seed, step, micro, rank)``
before every forward (as fairseq does), so a resumed run draws the same random numbers as an uninterrupted
one. Datasets should derive their own randomness from the index (``set_epoch`` is forwarded to them).
An ``IterableDataset`` must be a per-rank stream (:class:`selfvos.data.clip_stream.ClipStream`): it reads its
process's shards itself (Accelerate neither dispatches nor re-shards it) and resumes by ``start_at(batch)``,
which counts the skipped items instead of decoding them.

Non-finite guard: an update whose loss (on any process) or gradient norm is NaN/inf is skipped: no
optimizer step, the buffers (BatchNorm statistics) put back as they were, the scheduler and the step counter
advance as usual (so the data position and the schedule stay functions of the step and resume stays exact).
Skips are counted in :class:`TrainingState` and logged (``nonfinite_skipped``); ``max_nonfinite_steps`` in a
row stop the run with :class:`TrainingDiverged`. Checkpoints, exports and relabeling refuse non-finite weights.

Checkpoints carry a manifest (see ``selfvos.engine.checkpoint``); ``resume="auto"`` takes the newest one that
verifies and loads, saying which damaged ones it skipped. Tracking never stops training
(``selfvos.engine.tracking``); a ``train()`` that raises marks the MLflow run FAILED (KILLED on an interrupt).

Wall-clock limit: ``train.max_minutes`` (per ``train()`` call) and ``Trainer.deadline`` (an absolute
``time.monotonic()`` value that a caller or callback splitting a budget sets, e.g. in ``on_train_start``) end
a ``train()`` call early once the next step, expected to last as long as the previous one, would end past the
limit; at least one step runs. The round then ends as usual: round-end callbacks (a relabel pass), a resumable
checkpoint. All processes agree on the stop (one all-reduce per step, only while a limit is set).

``freeze_bn`` keeps every BatchNorm layer in eval mode for the whole run (fine-tuning with small batches);
``sync_batchnorm`` makes them SyncBatchNorm when several GPU processes train (``selfvos.engine.distributed``).
``Trainer.export`` writes the model with ``save_pretrained``, the format ``selfvos.from_pretrained`` reads;
under FSDP it first gathers the full weights (``Trainer.full_model``). DeepSpeed steps the optimizer inside
``backward`` and clips by its own ``gradient_clipping``: there the non-finite guard counts a bad update but
cannot undo it.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import (
    DataLoaderConfiguration, DistributedDataParallelKwargs, GradientAccumulationPlugin, ProjectConfiguration,
    broadcast_object_list, set_seed,
)
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, Dataset, IterableDataset
from tqdm.auto import tqdm

from selfvos.atomic import replace_dir
from selfvos.config import to_dict
from selfvos.engine.callbacks import Callback
from selfvos.engine.checkpoint import (
    TrainingState, latest_intact_checkpoint, list_checkpoints, step_dir_name, verify_checkpoint, write_manifest,
)
from selfvos.engine.config import TrainConfig, resolve_cpu_threads, resolve_mixed_precision, resolve_tracking_uri
from selfvos.engine.distributed import (
    check_process_group, check_strategy, full_state_dict, shards_parameters, sync_batchnorm,
)
from selfvos.engine.optim import build_optimizer, build_scheduler
from selfvos.engine.tracking import ExperimentTracker
from selfvos.errors import NonFiniteWeightsError, SelfvosInputError, TrainingDiverged
from selfvos.hub.mixin import SelfvosModelMixin
from selfvos.hub.weights import first_nonfinite

logger = logging.getLogger(__name__)
Batch = Dict[str, torch.Tensor]
Objective = Callable[[nn.Module, Batch], Mapping[str, torch.Tensor]]
Snapshot = List[Tuple[torch.Tensor, torch.Tensor]]
# torch warns when the scheduler steps before any optimizer step, which a skipped first update does on purpose
_SCHEDULER_FIRST = r"Detected call of `lr_scheduler.step\(\)` before `optimizer.step\(\)`"


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
    check_process_group(accelerator)
    check_strategy(accelerator)
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


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises ``KeyboardInterrupt`` (as Ctrl-C does) instead of ending the process
    at once, so the run is closed as KILLED and the CLI ends with its one error line; only in the main thread
    (where Python delivers signals), the previous handler is restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt("terminated (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_status(err: BaseException) -> str:
    """The MLflow status of a run ended by ``err``: ``"KILLED"`` for an interrupt, ``"FAILED"`` otherwise."""
    return "KILLED" if isinstance(err, (KeyboardInterrupt, SystemExit)) else "FAILED"


def step_seed(seed: int, step: int, micro: int, rank: int) -> int:
    """A 32-bit seed for one micro-batch on one process, independent of everything that happened before."""
    return int(np.random.SeedSequence([seed, step, micro, rank]).generate_state(1)[0])


class Trainer:
    """Train ``model`` with ``objective`` on ``dataset``; ``train(num_steps)`` runs one round of steps.

    Usable as a context manager: leaving the block closes the MLflow run as FINISHED, or FAILED / KILLED
    when an exception (an interrupt) leaves it.
    """

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
        self.deadline: float | None = None  # time.monotonic() after which train() ends its round early
        set_seed(config.seed)
        module = TrainStep(model, objective)
        if config.sync_batchnorm:
            module, synced = sync_batchnorm(module, acc.num_processes, acc.device.type)
            logger.info("sync_batchnorm: %d BatchNorm layers synchronised over %d processes", synced,
                        acc.num_processes)
        if config.freeze_bn:
            frozen = freeze_batchnorm(module)
            logger.info("freeze_bn: %d BatchNorm layers run in eval mode", frozen)
        optimizer = build_optimizer(module, config)
        scheduler = build_scheduler(optimizer, config)
        self._stream = isinstance(dataset, IterableDataset)  # a per-rank stream: ordered by itself, no shuffle
        loader = DataLoader(
            dataset, batch_size=config.batch_size, shuffle=not self._stream, drop_last=True, collate_fn=collate_fn,
            num_workers=config.num_workers, pin_memory=torch.cuda.is_available(),
        )
        if self._stream:
            from selfvos.data.clip_stream import prepare_stream_loader

            self.module, self.optimizer, self.scheduler = acc.prepare(module, optimizer, scheduler)
            self.loader = prepare_stream_loader(loader, acc)
        else:
            self.module, self.optimizer, self.scheduler, self.loader = acc.prepare(module, optimizer, scheduler, loader)
        self._unwrapped: nn.Module = acc.unwrap_model(self.module)  # the TrainStep: model + objective
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
        self.state.run_id = self.tracker.run_id or self.state.run_id
        self.tracker.log_params({"train": to_dict(config), **self.run_config})

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        self.close("FINISHED" if exc is None else run_status(exc))

    def _resume(self) -> None:
        """Restore the newest intact checkpoint (``resume="auto"``) or the one named by ``resume``."""
        cfg = self.config
        if cfg.resume is None:
            return
        path = self._resume_auto() if cfg.resume == "auto" else self._resume_from(Path(cfg.resume))
        if path is None:
            return
        # save_state/load_state do not restore the checkpoint counter (BRIEF section 6)
        self.accelerator.project_configuration.iteration = len(list_checkpoints(cfg.checkpoint_root))
        self._apply_schedule()
        logger.info("resumed from %s at step %d, round %d", path, self.state.step, self.state.round)

    def _resume_from(self, path: Path) -> Path:
        """Load the checkpoint the user named; a damaged one is a ``SelfvosInputError`` saying what is wrong."""
        if not path.is_dir():
            raise SelfvosInputError(path, "resume checkpoint folder not found")
        problem = self._verify(path) or self._try_load(path)
        if problem is not None:
            raise SelfvosInputError(path, f"damaged checkpoint, cannot resume from it: {problem}")
        return path

    def _resume_auto(self) -> Optional[Path]:
        """Load the newest checkpoint that verifies and loads, newest first; None when there is none at all.

        Damaged ones are skipped with a warning each; when every checkpoint is damaged the run stops
        (a ``SelfvosInputError``) instead of silently starting over.
        """
        root = self.config.checkpoint_root
        skipped: List[str] = []
        for _, path in reversed(list_checkpoints(root)):
            problem = self._verify(path) or self._try_load(path)
            if problem is None:
                if skipped:
                    logger.warning("resuming from %s, the newest intact checkpoint (skipped %s)", path,
                                   "; ".join(skipped))
                return path
            logger.warning("checkpoint %s is damaged (%s); trying the one before it", path, problem)
            skipped.append(f"{path.name}: {problem}")
        if skipped:
            raise SelfvosInputError(
                root, f"no intact checkpoint to resume from ({'; '.join(skipped)}); move the damaged ones away "
                "or set train.resume to null to start over",
            )
        return None

    def _verify(self, path: Path) -> Optional[str]:
        """``verify_checkpoint(path)`` read once, on the main process, and shared with every process."""
        answer = [verify_checkpoint(path) if self.accelerator.is_main_process else None]
        broadcast_object_list(answer)
        return answer[0]

    def _try_load(self, path: Path) -> Optional[str]:
        """``load_state(path)``; None on success on every process, else why it failed."""
        self.state.reset()
        problem = None
        try:
            self.accelerator.load_state(str(path))
        except Exception as err:  # any library error on a damaged file: the caller reports or falls back
            problem = f"cannot be loaded ({type(err).__name__}: {err})"
        if self._any_process(problem is not None):
            return problem or "cannot be loaded on another process"
        return None

    def _any_process(self, flag: Union[bool, torch.Tensor]) -> bool:
        """True on every process when ``flag`` is true on at least one (one all-reduce)."""
        value = torch.as_tensor(flag, device=self.accelerator.device).float().reshape(1)
        return bool(self.accelerator.reduce(value, reduction="sum").item() > 0)

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
            if self._stream:  # skipped by counting items, nothing decoded; every pass after the first starts at 0
                self.loader.dataset.start_at(offset)
                loader = self.loader
            else:
                loader = self.accelerator.skip_first_batches(self.loader, offset) if offset else self.loader
            yield from loader
            epoch, offset = epoch + 1, 0

    def train(self, num_steps: Optional[int] = None) -> Dict[str, float]:
        """Train until ``round_start + num_steps`` (or ``max_steps``), then end the round; returns the last metrics.

        The round ends earlier when the wall-clock limit (``max_minutes`` from the start of this call, or
        ``self.deadline``) would be passed by the next step (see the module docstring).

        An exception leaving it (:class:`TrainingDiverged`, an interrupt, a crash) first marks the MLflow
        run FAILED (KILLED for an interrupt). SIGTERM (a job scheduler's stop, ``accelerate launch`` stopping the
        other processes) counts as an interrupt while it runs.
        """
        try:
            with terminate_as_interrupt():
                return self._train(num_steps)
        except BaseException as err:
            self.tracker.finish(run_status(err))
            raise

    def _train(self, num_steps: Optional[int]) -> Dict[str, float]:
        """The body of :meth:`train`."""
        cfg, st = self.config, self.state
        started = time.monotonic()
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
        stop_at = self._stop_time(started)
        try:
            while st.step < target:
                step_start = time.monotonic()
                metrics = self._update(batches)
                st.step += 1
                out_of_time = self._out_of_time(stop_at, time.monotonic() - step_start)
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}")
                if st.step % cfg.log_every == 0 or st.step == target or st.nonfinite_streak or out_of_time:
                    self.tracker.log_metrics(metrics, st.step)
                self._stop_if_diverged()
                if cfg.save_every and st.step % cfg.save_every == 0 and st.step < target and not out_of_time:
                    self.save_state()
                for callback in self.callbacks:
                    callback.on_step_end(self, metrics)
                if out_of_time:
                    logger.info("round %d ended by the wall-clock limit at step %d (%d steps short of step %d)",
                                st.round, st.step, target - st.step, target)
                    break
        finally:
            bar.close()
            batches.close()
        for callback in self.callbacks:
            callback.on_round_end(self, st.round)
        st.round, st.round_start = st.round + 1, st.step
        self.save_state()
        return metrics

    def _stop_time(self, started: float) -> float | None:
        """The ``time.monotonic()`` value this ``train()`` call must end by: the earlier of ``started +
        max_minutes`` and ``self.deadline``; None without a limit."""
        limits = [] if self.deadline is None else [self.deadline]
        if self.config.max_minutes is not None:
            limits.append(started + 60.0 * self.config.max_minutes)
        return min(limits) if limits else None

    def _out_of_time(self, stop_at: float | None, step_seconds: float) -> bool:
        """True on every process when, on any of them, one more step of ``step_seconds`` would end past
        ``stop_at``."""
        if stop_at is None:
            return False
        return self._any_process(time.monotonic() + step_seconds > stop_at)

    def _update(self, batches: Iterator[Batch]) -> Dict[str, float]:
        """One optimizer update over ``grad_accum`` micro-batches (skipped when non-finite, see the module
        docstring); returns process-averaged metrics, ``grad_norm`` (before clipping) and ``nonfinite_skipped``."""
        acc, cfg = self.accelerator, self.config
        sums: Dict[str, torch.Tensor] = {}
        lrs = {f"lr/{g.get('name', i)}": float(g["lr"]) for i, g in enumerate(self.optimizer.param_groups)}
        buffers = self._snapshot_buffers()
        loss_finite = torch.ones((), dtype=torch.bool, device=acc.device)
        grad_norm = None
        for micro in range(cfg.grad_accum):
            batch = next(batches)
            set_seed(step_seed(cfg.seed, self.state.step, micro, acc.process_index))
            with acc.accumulate(self.module):
                out = self.module(batch)
                acc.backward(out["loss"])
                loss_finite &= torch.isfinite(out["loss"].detach()).all()
                if acc.sync_gradients:
                    # the norm is needed for the guard even without clipping (max_norm=inf scales by exactly 1)
                    grad_norm = acc.clip_grad_norm_(self.module.parameters(), cfg.grad_clip or math.inf)
                    self._apply_update(loss_finite, grad_norm, buffers)
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
        metrics["nonfinite_skipped"] = float(self.state.nonfinite_skipped)
        return metrics

    def _apply_update(self, loss_finite: torch.Tensor, grad_norm: Optional[torch.Tensor], buffers: Snapshot) -> None:
        """Step the optimizer and the scheduler, or skip the update when any process saw a non-finite value.

        ``loss_finite``: () bool, every micro-batch loss of this process was finite; ``grad_norm``: () global
        gradient norm (identical on every process after the gradient all-reduce).
        """
        acc = self.accelerator
        if self._nonfinite_anywhere(loss_finite, grad_norm):
            self._skip_update(loss_finite, grad_norm, buffers)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_SCHEDULER_FIRST)
                self.scheduler.step()  # the schedule follows the step counter, skipped updates included
            return
        self.state.nonfinite_streak = 0
        self.optimizer.step()
        if not acc.optimizer_step_was_skipped:  # an fp16 overflow the grad scaler skipped
            self.scheduler.step()

    def _nonfinite_anywhere(self, loss_finite: torch.Tensor, grad_norm: Optional[torch.Tensor]) -> bool:
        """True on every process when a loss on any process, or the gradient norm, is NaN/inf.

        With fp16 loss scaling an infinite gradient norm is an overflow the grad scaler skips and backs off
        from by itself, so there only the loss counts.
        """
        bad = ~loss_finite
        if grad_norm is not None and self.accelerator.scaler is None:
            bad = bad | ~torch.isfinite(torch.as_tensor(grad_norm, device=bad.device))
        return self._any_process(bad)

    def _skip_update(self, loss_finite: torch.Tensor, grad_norm: Optional[torch.Tensor], buffers: Snapshot) -> None:
        """Count and report a skipped update; undo what its forward passes changed in the buffers."""
        st, scaler = self.state, self.accelerator.scaler
        st.nonfinite_skipped += 1
        st.nonfinite_streak += 1
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        if scaler is not None:
            scaler.update()  # clears this update's unscale record (and backs off on an overflow)
        here = f"loss {'finite' if bool(loss_finite) else 'NaN/inf'}"
        if grad_norm is not None:
            here += f", gradient norm {float(grad_norm):.4g}"
        logger.warning(
            "step %d: non-finite loss or gradient norm (this process: %s); update skipped "
            "(%d in a row, %d in all; the run stops after %s in a row)", st.step + 1, here,
            st.nonfinite_streak, st.nonfinite_skipped, self.config.max_nonfinite_steps or "never",
        )

    def _snapshot_buffers(self) -> Snapshot:
        """``(buffer, copy)`` for every buffer of model and objective, so a skipped update leaves them as they
        were (a NaN batch through a BatchNorm layer in train mode poisons its running statistics)."""
        return [(buffer, buffer.detach().clone()) for buffer in self._unwrapped.buffers()]

    def _stop_if_diverged(self) -> None:
        """Raise :class:`TrainingDiverged` after ``max_nonfinite_steps`` skipped updates in a row."""
        cfg, st = self.config, self.state
        limit = cfg.max_nonfinite_steps
        if not limit or st.nonfinite_streak < limit:
            return
        checkpoint = latest_intact_checkpoint(cfg.checkpoint_root)
        where = (f"the last good checkpoint {checkpoint} is intact; resume from it after lowering train.lr or "
                 "fixing the data" if checkpoint is not None else "no checkpoint was written yet")
        raise TrainingDiverged(
            cfg.output_dir,
            f"training diverged at step {st.step}: {st.nonfinite_streak} updates in a row had a non-finite loss "
            f"or gradient norm and were skipped (train.max_nonfinite_steps={limit}); {where}",
            step=st.step, consecutive=st.nonfinite_streak, checkpoint=checkpoint,
        )

    def check_finite_weights(self, path: Union[str, Path], action: str, module: Optional[nn.Module] = None) -> None:
        """Raise :class:`NonFiniteWeightsError` on every process when ``module`` (default: model + objective)
        holds NaN/inf on any process; ``path`` is what would have been written, ``action`` completes
        "refusing to ..."."""
        if module is None and shards_parameters(self.accelerator):  # this process's shard of every tensor
            bad = first_nonfinite([*self.module.named_parameters(), *self.module.named_buffers()])
        else:
            bad = first_nonfinite((module or self._unwrapped).state_dict().items())
        if self._any_process(bad is not None):
            raise NonFiniteWeightsError(
                path, f"refusing to {action}: non-finite weights {bad or '(on another process)'}",
                tensor=bad.name if bad is not None else "",
            )

    def save_state(self) -> Path:
        """Write a resumable checkpoint ``checkpoints/step_XXXXXXX`` (partial folder first, then its manifest,
        then renamed). Non-finite weights are refused before anything is written or rotated away."""
        acc, root = self.accelerator, self.config.checkpoint_root
        final = root / step_dir_name(self.state.step)
        partial = root / f"{final.name}.partial"
        self.check_finite_weights(final, "write this checkpoint (the earlier ones are kept)")
        if acc.is_main_process:
            root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(partial, ignore_errors=True)
        acc.wait_for_everyone()
        acc.save_state(str(partial))
        acc.wait_for_everyone()
        if acc.is_main_process:
            write_manifest(partial, self.state.step)
            replace_dir(partial, final)
            keep = self.config.keep_checkpoints
            for _, old in list_checkpoints(root)[: -keep] if keep else []:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    def export(self, directory: Union[str, Path, None] = None) -> Path:
        """Save the trained model with ``save_pretrained`` into ``directory`` (default ``<output_dir>/export``).

        The folder holds ``config.json`` + ``model.safetensors`` and loads with ``selfvos.from_pretrained``;
        the objective is not saved (heads that must survive belong to the model). Every process calls it, the
        main process writes; non-finite weights are a :class:`NonFiniteWeightsError` and nothing is written.
        """
        acc = self.accelerator
        directory = Path(directory or Path(self.config.output_dir) / "export")
        model = self.full_model()
        if not isinstance(model, SelfvosModelMixin):
            raise TypeError(
                f"Trainer.export saves with save_pretrained; {type(model).__name__} is not a "
                "selfvos.hub.SelfvosModelMixin"
            )
        acc.wait_for_everyone()
        self.check_finite_weights(directory, "export the model", model)
        if acc.is_main_process:
            model.save_pretrained(directory)
        acc.wait_for_everyone()
        return directory

    def full_model(self) -> nn.Module:
        """The trained model (without the objective) holding all of its weights on this process.

        DDP, one process and DeepSpeed ZeRO-2: the unwrapped model itself. FSDP: a fresh ``type(model)(config)``
        loaded with the full weights gathered by ``selfvos.engine.distributed.full_state_dict`` (on the
        training device, in the model's train/eval mode); every process must call it then, as it gathers.
        """
        model = self._unwrapped.model
        if not shards_parameters(self.accelerator):
            return model
        state = full_state_dict(self.accelerator, self.module)
        weights = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
        copy = type(model)(model.config)
        copy.load_state_dict(weights)
        return copy.to(self.accelerator.device).train(model.training)

    def log_round_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Per-round quality (e.g. pseudo-label J on held-out videos) as ``round/<name>`` at step = round index."""
        self.tracker.log_metrics({f"round/{k}": v for k, v in metrics.items()}, step=self.state.round)

    def close(self, status: str = "FINISHED") -> None:
        """Finish the MLflow run (only the first close or failure counts)."""
        self.tracker.finish(status)
