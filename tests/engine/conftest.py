"""Engine test setup: two CPU threads at most, fresh Accelerate singletons per test, toy parts importable."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from engine_toys import reset_accelerate_state  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_accelerate():
    import torch

    torch.set_num_threads(2)
    reset_accelerate_state()
    yield
    reset_accelerate_state()
