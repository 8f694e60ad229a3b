"""Shared fixtures. Sets HF_HUB_OFFLINE before huggingface_hub can be imported and points MLflow at
a per-test sqlite store; real-data fixtures skip cleanly when ../shared/data is absent."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SELFVOS_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _mlflow_sqlite(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real DAVIS / video data (``../shared/data``); skips when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set SELFVOS_SHARED_DATA or check out ../shared)")
    return SHARED_DATA


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, skipping the calling test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found: {path}")
    return path


@pytest.fixture()
def one_thread():
    """One torch thread for the test (tiny tensors: a second intra-op thread only adds overhead on a shared
    CPU); the previous count is restored. Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
