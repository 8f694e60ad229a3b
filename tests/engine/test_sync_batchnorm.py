"""train.sync_batchnorm: the conversion itself, one process left untouched, the CPU and frozen-BN refusals;
and the launch check that refuses processes which do not form one process group."""
from __future__ import annotations

import copy

import pytest
import torch
from tests.engine.engine_toys import ToyConfig, ToyModel, make_parts, toy_config
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from selfvos.engine import TrainConfig, Trainer, build_accelerator
from selfvos.engine.distributed import convert_sync_batchnorm, sync_batchnorm
from selfvos.errors import SelfvosInputError


def batchnorm_net() -> nn.Module:
    """The toy model (a BatchNorm2d in its backbone) plus a BatchNorm1d, with running statistics that moved."""
    torch.manual_seed(0)
    net = nn.ModuleDict({"toy": ToyModel(ToyConfig(norm="batch")), "extra": nn.BatchNorm1d(4)})
    net.train()
    net["toy"](torch.rand(2, 3, 8, 8))
    net["extra"](torch.randn(5, 4) * 3 + 1)
    return net


def kinds(module: nn.Module):
    return sorted(type(m).__name__ for m in module.modules() if isinstance(m, _BatchNorm))


def test_conversion_replaces_every_batchnorm_and_keeps_its_tensors():
    net = batchnorm_net()
    original = copy.deepcopy(net).eval()
    params = dict(net.named_parameters())
    converted, count = convert_sync_batchnorm(net)
    assert count == 2 and kinds(converted) == ["SyncBatchNorm", "SyncBatchNorm"]
    for name, param in converted.named_parameters():  # the same tensors: optimizer groups built later see them
        assert param is params[name]
    assert converted.state_dict().keys() == original.state_dict().keys()
    for key, value in original.state_dict().items():
        assert torch.equal(converted.state_dict()[key], value), key
    converted.eval()  # eval mode: running statistics, no synchronisation, the same outputs
    frames = torch.rand(3, 3, 8, 8)
    torch.testing.assert_close(converted["toy"](frames), original["toy"](frames), rtol=0, atol=0)


def test_one_process_is_left_untouched(tmp_path):
    net = batchnorm_net()
    assert sync_batchnorm(net, 1, "cuda") == (net, 0) and kinds(net) == ["BatchNorm1d", "BatchNorm2d"]
    model, objective, data = make_parts(config=ToyConfig(norm="batch"))
    trainer = Trainer(model, data, toy_config(tmp_path, max_steps=1, sync_batchnorm=True), objective=objective)
    assert kinds(trainer._unwrapped) == ["BatchNorm2d"] and trainer._unwrapped.model is model
    trainer.train()
    assert trainer.state.step == 1


def test_several_gpu_processes_convert_and_several_cpu_processes_are_refused():
    synced, count = sync_batchnorm(batchnorm_net(), 2, "cuda")  # conversion only: nothing runs here
    assert count == 2 and kinds(synced) == ["SyncBatchNorm", "SyncBatchNorm"]
    with pytest.raises(SelfvosInputError, match="train.sync_batchnorm: .*GPUs only"):
        sync_batchnorm(batchnorm_net(), 2, "cpu")


def test_sync_batchnorm_with_frozen_batchnorm_is_a_config_error(tmp_path):
    with pytest.raises(ValueError, match="train.sync_batchnorm and train.freeze_bn conflict"):
        TrainConfig(output_dir=str(tmp_path), sync_batchnorm=True, freeze_bn=True)
    assert TrainConfig(output_dir=str(tmp_path), sync_batchnorm=True).sync_batchnorm


def test_processes_without_one_process_group_are_refused(tmp_path, monkeypatch):
    # what `accelerate launch --multi_gpu` without ACCELERATE_USE_CPU=1 gives on a machine without GPUs
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SelfvosInputError, match="accelerate launch: 2 processes were started .*ACCELERATE_USE_CPU=1"):
        build_accelerator(TrainConfig(output_dir=str(tmp_path)))
