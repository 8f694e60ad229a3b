"""Property-based fuzz suite (issue 19): bad masks, frame folders, video files and checkpoints either load into
well-formed results or fail with one ``SelfvosInputError`` / one ``selfvos: error:`` line, never a traceback or a
half-written output.

Every test is reproducible (``derandomize=True``, no example database) and sized so that the whole folder runs in
well under 90 s on one core. The profile ``selfvos-fuzz`` is loaded here; a test's own ``@settings`` only sets
``max_examples``.
"""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "selfvos-fuzz",
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("selfvos-fuzz")


@pytest.fixture(autouse=True, scope="session")
def _mlflow_sqlite(tmp_path_factory):
    """One MLflow store for the whole fuzz session: replaces the per-test autouse fixture of tests/conftest.py,
    which is function-scoped (hypothesis runs many examples inside one test call)."""
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    yield
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny MuG checkpoint folder (resnet18 up to layer2, 32-dim embedding) written by ``save_pretrained``."""
    import torch

    from selfvos.backbones import BackboneConfig
    from selfvos.pretrain import MuGConfig, MuGModel

    torch.manual_seed(0)
    model = MuGModel(MuGConfig(backbone=BackboneConfig(return_layers=("layer2",)), embed_dim=32))
    return model.save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny-mug")
