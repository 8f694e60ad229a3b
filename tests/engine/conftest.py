"""Engine test setup: two CPU threads at most and fresh Accelerate singletons for every test."""
from __future__ import annotations

import pytest

from tests.engine.engine_toys import reset_accelerate_state


@pytest.fixture(autouse=True)
def _fresh_accelerate():
    import torch

    torch.set_num_threads(2)
    reset_accelerate_state()
    yield
    reset_accelerate_state()
