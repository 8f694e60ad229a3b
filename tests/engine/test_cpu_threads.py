"""CPU thread count: accelerate exports OMP_NUM_THREADS=1, the engine shares the cores explicitly."""
import os

import pytest
import torch

from selfvos.engine.config import TrainConfig, resolve_cpu_threads
from selfvos.engine.trainer import build_accelerator


def test_threads_share_the_cores_between_local_processes(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert resolve_cpu_threads(None, 1) == 8
    assert resolve_cpu_threads(None, 2) == 4
    assert resolve_cpu_threads(None, 16) == 1
    assert resolve_cpu_threads(3, 2) == 3
    with pytest.raises(ValueError, match="cpu_threads"):
        resolve_cpu_threads(0, 1)


def test_build_accelerator_sets_torch_threads_on_cpu(tmp_path):
    before = torch.get_num_threads()
    try:
        build_accelerator(TrainConfig(output_dir=str(tmp_path), cpu_threads=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
