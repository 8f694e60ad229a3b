"""Inference: segmenting videos with a pretrained model, state kept apart from the model."""
from __future__ import annotations

from selfvos.inference.memory import ContextBank, ContextEntry
from selfvos.inference.one_shot import FeatureEmbedding, OneShotConfig, OneShotPropagator, lab_pair
from selfvos.inference.propagation import LocalWindowAffinity, dense_window_topk, propagate_labels
from selfvos.inference.zero_shot import ZeroShotConfig, ZeroShotSegmenter
from selfvos.inference.segmenter import Segmenter
from selfvos.inference.video_core import VideoHeadCore, ZeroShotHeadInference
from selfvos.inference.io import OverlayVideoWriter, render_overlay, write_masks, write_overlay_video

__all__ = [
    "ContextBank", "ContextEntry", "FeatureEmbedding", "OneShotConfig", "OneShotPropagator", "lab_pair",
    "LocalWindowAffinity", "dense_window_topk", "propagate_labels",
    "ZeroShotConfig", "ZeroShotSegmenter", "Segmenter", "OverlayVideoWriter", "render_overlay", "write_masks",
    "write_overlay_video", "VideoHeadCore", "ZeroShotHeadInference",
]
