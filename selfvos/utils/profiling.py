"""Machine measurements that put timings in context: the matrix-multiply peak of this CPU or GPU.

>>> matmul_peak_gflops()                       # float32 on the CPU, best of 3
>>> matmul_peak_gflops(dtype=torch.bfloat16)   # what bf16 kernels can reach here

A speed measured on a shared machine is only comparable with the peak measured next to it; the benchmark
scripts record both (``pretrain_step_speed.py``, ``inference_flops.py``).
"""
from __future__ import annotations

import time
from typing import Union

import torch


def matmul_peak_gflops(n: int = 2048, repeats: int = 3, dtype: torch.dtype = torch.float32,
                       device: Union[str, torch.device] = "cpu") -> float:
    """Best-of-``repeats`` GFLOP/s of one ``(n, n) @ (n, n)`` product in ``dtype`` on ``device`` (2 n^3 FLOPs)."""
    device = torch.device(device)
    a, b = torch.rand(n, n, device=device).to(dtype), torch.rand(n, n, device=device).to(dtype)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9
