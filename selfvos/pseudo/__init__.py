"""Pseudo-labels without human masks: manifold-ranking appearance saliency, camera-compensated motion
saliency, their fusion, class activation maps, and a versioned, resumable store of the results.

Registered pseudo-labelers (``selfvos list pseudo-labelers``): ``mr``, ``motion``, ``fused``, ``cam``.
"""
from selfvos.pseudo.base import PseudoLabeler
from selfvos.pseudo.cam import CamPseudoLabeler
from selfvos.pseudo.fusion import FusedSaliency
from selfvos.pseudo.generate import generate_pseudo_labels
from selfvos.pseudo.motion import MotionSaliency
from selfvos.pseudo.quality import evaluate_pseudo_masks
from selfvos.pseudo.saliency_mr import ManifoldRankingSaliency
from selfvos.pseudo.store import PseudoLabelStore
from selfvos.registry import PSEUDO_LABELERS

PSEUDO_LABELERS.register("mr")(ManifoldRankingSaliency)
PSEUDO_LABELERS.register("motion")(MotionSaliency)
PSEUDO_LABELERS.register("fused")(FusedSaliency)
PSEUDO_LABELERS.register("cam")(CamPseudoLabeler)

__all__ = [
    "PseudoLabeler", "ManifoldRankingSaliency", "MotionSaliency", "FusedSaliency", "CamPseudoLabeler",
    "PseudoLabelStore", "generate_pseudo_labels", "evaluate_pseudo_masks",
]
