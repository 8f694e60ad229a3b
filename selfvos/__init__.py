"""selfvos: learn video object segmentation from unlabeled video.

Data flows one way through the package:
``data`` (videos, clips) -> ``pseudo`` (pseudo-masks) -> ``backbones`` + ``pretrain`` (objectives)
-> ``engine`` (Accelerate loop) -> ``heads`` -> ``inference`` -> ``eval`` -> hub.
"""
from selfvos.registry import BACKBONES, HEADS, OBJECTIVES, PSEUDO_LABELERS, SOURCES, Registry

__version__ = "0.1.0"
__all__ = ["BACKBONES", "HEADS", "OBJECTIVES", "PSEUDO_LABELERS", "SOURCES", "Registry", "__version__"]
