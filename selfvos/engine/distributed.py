"""Multi-process helpers of the engine: the launch check, SyncBatchNorm, sharded-parameter strategies, and
work (validation videos) split across processes and gathered back in order.

- :func:`check_process_group`: processes started by a launcher that did not form one process group (on a
  machine without GPUs, ``accelerate launch --multi_gpu`` without ``ACCELERATE_USE_CPU=1`` starts N
  independent one-process runs) are an error instead of N runs silently writing the same files.
- :func:`sync_batchnorm`: ``torch.nn.SyncBatchNorm`` for every BatchNorm layer when more than one process
  trains (mean and variance over the global batch ``batch_size * processes``); torch's SyncBatchNorm refuses
  CPU tensors, so several CPU processes are an error that says so.
- :func:`full_state_dict`: under FSDP the prepared module holds only this process's shard; the full weights
  are gathered on every process (``StateDictType.FULL_STATE_DICT``, FSDP1; ``get_model_state_dict``, FSDP2).
  DeepSpeed ZeRO-1/2 keep full parameters on every process; ZeRO-3 is refused (:func:`check_strategy`).
- :func:`shard_range` / :func:`gather_in_order`: item ``i`` of ``n`` goes to one process (contiguous blocks,
  the first ``n % world`` processes one more, as ``Accelerator.split_between_processes``); the gathered list
  is every process's results concatenated in rank order, i.e. in item order, on every process.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, gather_object
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from selfvos.errors import SelfvosInputError


def check_process_group(accelerator: Accelerator) -> None:
    """Raise when the launcher started ``WORLD_SIZE > 1`` processes but this one trains alone."""
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched > 1 and accelerator.num_processes == 1:
        raise SelfvosInputError(
            "accelerate launch",
            f"{launched} processes were started but they do not form one process group (each would train alone "
            "and write the same files); on CPU set ACCELERATE_USE_CPU=1 (see docs/distributed.md)",
        )


def check_strategy(accelerator: Accelerator) -> None:
    """Refuse DeepSpeed ZeRO-3: its parameters are partitioned, so validation and export would need the
    16-bit consolidated weights; use ZeRO-2 or FSDP (whose full weights :func:`full_state_dict` gathers)."""
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return
    stage = accelerator.state.deepspeed_plugin.zero_stage
    if stage == 3:
        raise SelfvosInputError(
            "deepspeed_config.zero_stage", "ZeRO-3 is not supported by the selfvos engine; use zero_stage 2 "
            "(recipes/configs/accelerate/deepspeed.yaml) or FSDP (fsdp.yaml) for large backbones",
        )


def convert_sync_batchnorm(module: nn.Module) -> Tuple[nn.Module, int]:
    """``(module with every BatchNorm layer replaced by SyncBatchNorm, number of layers replaced)``.

    The new layers share the old layers' parameters and running-statistics buffers (same tensors), so the
    weights, the optimizer groups built afterwards and a checkpoint's keys are unchanged.
    """
    count = sum(1 for m in module.modules() if isinstance(m, _BatchNorm) and not isinstance(m, nn.SyncBatchNorm))
    return nn.SyncBatchNorm.convert_sync_batchnorm(module), count


def sync_batchnorm(module: nn.Module, processes: int, device_type: str) -> Tuple[nn.Module, int]:
    """``train.sync_batchnorm``: convert when ``processes > 1`` (see :func:`convert_sync_batchnorm`); one
    process gets ``module`` back untouched (0 layers). Several CPU processes are a ``SelfvosInputError``."""
    if processes <= 1:
        return module, 0
    if device_type == "cpu":
        raise SelfvosInputError(
            "train.sync_batchnorm", "torch's SyncBatchNorm runs on GPUs only; several CPU processes cannot "
            "synchronise BatchNorm (set it to false, or train.freeze_bn true for small per-process batches)",
        )
    return convert_sync_batchnorm(module)


def shards_parameters(accelerator: Accelerator) -> bool:
    """True when a process holds only a shard of the parameters (FSDP)."""
    return accelerator.distributed_type == DistributedType.FSDP


def full_state_dict(accelerator: Accelerator, module: nn.Module) -> Dict[str, torch.Tensor]:
    """The full (unsharded) state dict of the prepared ``module`` on every process; every process must call it.

    FSDP1: ``FULL_STATE_DICT`` with ``rank0_only=False`` (keys without FSDP's wrapper prefixes), offloaded to
    CPU; FSDP2: ``get_model_state_dict(full_state_dict=True)``. Otherwise the unwrapped module's state dict.
    """
    if not shards_parameters(accelerator):
        return accelerator.unwrap_model(module).state_dict()
    if getattr(accelerator, "is_fsdp2", False):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True))
        return {k: v.cpu() for k, v in state.items()}
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    config = FullStateDictConfig(offload_to_cpu=True, rank0_only=False)
    with FSDP.state_dict_type(module, StateDictType.FULL_STATE_DICT, config):
        return dict(module.state_dict())


def shard_range(n: int, rank: int, world: int) -> range:
    """The items ``[start, stop)`` of ``n`` that process ``rank`` of ``world`` handles: contiguous blocks, sizes
    ``n // world + (rank < n % world)``; the ranges of all processes cover ``range(n)`` once, in order."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} of {world} processes")
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


def gather_in_order(local: Sequence[Tuple[int, Any]], error: Optional[BaseException],
                    accelerator: Optional[Accelerator]) -> List[Tuple[int, Any]]:
    """Every process's ``(index, result)`` pairs, sorted by index, on every process (``gather_object``).

    ``error``: what stopped this process's share (None when it finished). When any process failed, every
    process raises: the failing one its own error, the others a ``RuntimeError`` naming the process and the
    error, so no process is left waiting in a later collective. ``gather_object`` rather than
    ``gather_for_metrics``: the latter trims by the training dataloader's remainder when that loader has just
    ended an epoch, which these results have nothing to do with.
    """
    if accelerator is None or accelerator.num_processes == 1:
        if error is not None:
            raise error
        return sorted(local, key=lambda item: item[0])
    problem = None if error is None else f"{type(error).__name__}: {error}"
    parts = gather_object([(accelerator.process_index, list(local), problem)])
    failed = [(rank, why) for rank, _, why in parts if why is not None]
    if failed:
        if error is not None:
            raise error
        rank, why = failed[0]
        raise RuntimeError(f"process {rank} failed: {why}")
    merged = [item for _, items, _ in parts for item in items]
    indices = [index for index, _ in merged]
    if len(set(indices)) != len(indices):
        raise RuntimeError(f"processes returned overlapping items: {sorted(indices)}")
    return sorted(merged, key=lambda item: item[0])
