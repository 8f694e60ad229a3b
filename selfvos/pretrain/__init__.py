"""MuG multi-granularity self-supervised pretraining: one model, four objectives, one weighted sum.

>>> model = MuGModel(MuGConfig())
>>> objective = OBJECTIVES.create("mug", config=ObjectiveConfig(matching=False))
>>> out = objective(model, batch)    # {"loss", "frame", "tracking", "matching", "memory", ...}
>>> out["loss"].backward()
>>> step = MuGPretrainer(model, objective)   # one forward(batch) for accelerate / DDP

Registered objectives: ``frame``, ``tracking``, ``matching``, ``memory``, ``flow_explanation`` (the single
terms), ``mug`` (the weighted sum), and the survey's motion objectives ``sfm`` (SfM-Net) and ``morel`` (Goel et
al.), plain modules over explicit mask / motion / flow tensors. See each module for the exact formulation.
"""
from __future__ import annotations

from selfvos.pretrain.flow_explanation import FlowExplanation, FlowExplanationConfig
from selfvos.pretrain.frame import FrameObjective, masked_soft_bce
from selfvos.pretrain.matching import CoAttentionMatching, MatchingConfig, TransformRegressor
from selfvos.pretrain.memory import MemoryReader, VideoMemory
from selfvos.pretrain.model import MuGConfig, MuGModel
from selfvos.pretrain.morel import MORELConfig, MORELObjective
from selfvos.pretrain.objective import MuGObjective, MuGPretrainer, ObjectiveConfig
from selfvos.pretrain.sfm import SfMConfig, SfMObjective
from selfvos.pretrain.tracking import ForwardBackwardTracking, TrackingConfig
from selfvos.registry import OBJECTIVES

OBJECTIVES.register("frame")(FrameObjective)
OBJECTIVES.register("tracking")(ForwardBackwardTracking)
OBJECTIVES.register("matching")(CoAttentionMatching)
OBJECTIVES.register("memory")(VideoMemory)
OBJECTIVES.register("flow_explanation")(FlowExplanation)
OBJECTIVES.register("mug")(MuGObjective)
OBJECTIVES.register("sfm")(SfMObjective)
OBJECTIVES.register("morel")(MORELObjective)

__all__ = [
    "MuGModel", "MuGConfig", "MuGObjective", "MuGPretrainer", "ObjectiveConfig", "FrameObjective", "ForwardBackwardTracking",
    "TrackingConfig", "CoAttentionMatching", "MatchingConfig", "TransformRegressor", "VideoMemory",
    "MemoryReader", "masked_soft_bce", "FlowExplanation", "FlowExplanationConfig",
    "SfMConfig", "SfMObjective", "MORELConfig", "MORELObjective",
]
