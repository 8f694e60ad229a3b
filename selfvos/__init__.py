"""selfvos: learn video object segmentation from unlabeled video.

Data flows one way through the package:
``data`` (videos, clips) -> ``pseudo`` (pseudo-masks) -> ``backbones`` + ``pretrain`` (objectives)
-> ``engine`` (Accelerate loop) -> ``heads`` -> ``inference`` -> ``eval`` -> hub.
"""
from selfvos.registry import BACKBONES, OBJECTIVES, PSEUDO_LABELERS, SOURCES, Registry, create_model, list_models

__version__ = "0.1.0"
__all__ = ["BACKBONES", "create_model", "list_models", "OBJECTIVES", "PSEUDO_LABELERS", "SOURCES", "Registry", "__version__", "from_pretrained", "Segmenter"]

# Public names imported on first use, so `import selfvos` stays light (no torch): name -> module.
_LAZY = {"from_pretrained": "selfvos.hub.mixin", "Segmenter": "selfvos.inference.segmenter"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'selfvos' has no attribute {name!r}")
