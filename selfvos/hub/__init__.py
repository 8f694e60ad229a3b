"""Hugging Face Hub layer: safetensors checkpoints, ``from_pretrained`` by architecture, model cards, push.

- ``SelfvosModelMixin`` / ``register_architecture``: mix into every selfvos ``nn.Module``.
- ``from_pretrained(dir_or_repo_id)``: load any registered model; the class comes from ``config.json``.
- ``render_model_card`` / ``push_checkpoint``: the card and the upload (see ``hub/README.md``).
"""
from selfvos.hub.card import BenchmarkResult, load_benchmarks, render_model_card
from selfvos.hub.files import CONFIG_NAME, read_config, resolve_file
from selfvos.hub.mixin import (
    SelfvosModelMixin,
    architectures,
    config_class_of,
    from_pretrained,
    register_architecture,
)
from selfvos.hub.publish import PushResult, build_upload_folder, push_checkpoint, upload_folder
from selfvos.hub.weights import WEIGHTS_NAME, load_weights, read_weights, save_weights

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "BenchmarkResult",
    "PushResult",
    "SelfvosModelMixin",
    "architectures",
    "build_upload_folder",
    "config_class_of",
    "from_pretrained",
    "load_benchmarks",
    "load_weights",
    "push_checkpoint",
    "read_config",
    "read_weights",
    "register_architecture",
    "render_model_card",
    "resolve_file",
    "save_weights",
    "upload_folder",
]
