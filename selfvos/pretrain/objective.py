"""MuGObjective: the weighted sum of the four granularities, with ablation switches.

    L = w_frame * L_frame + beta1 * L_tracking + beta2 * L_matching + beta3 * L_memory + w_flow * L_flow

``L_flow`` (off by default) is the label-free flow-explanation objective (``selfvos.pretrain.flow_explanation``,
Guess-What-Moves style) applied to the frame head itself: its foreground probability p and 1 - p are the two
segments, and a quadratic motion model fitted in closed form inside each must reconstruct the clip's optical flow
(``batch["flow"]``, ``clip.flow``), plus a temporal term between consecutive clip frames. Motion then teaches the
frame head during training instead of being fused by hand at inference only.

``L_sfm`` and ``L_morel`` (off by default) are the survey's two other label-free motion objectives on the same
frame head: its foreground probability is the one object mask (K = 1) of SfM-Net (``selfvos.pretrain.sfm``: a
rigid object motion and a camera motion over a depth plane compose a flow that must match the observed flow and
reconstruct frame t from frame t+1) and of MOREL (``selfvos.pretrain.morel``: an object translation and a camera
translation warp frame t+1 onto frame t, with a sparsity penalty on the mask). The motions come from training-only
:class:`~selfvos.pretrain.motion_heads.MotionPredictor` heads on the features of frames t and t+1, owned by the
objective (``feature_channels`` must be given when either term is on). Both work at ``motion_scale`` times the
clip size: the mask is upsampled bilinearly, frames and flow are area-downsampled (flow in pixels of that size).

Weight mapping (BRIEF section 2 gives beta1 = 0.1, beta2 = 0.02, beta3 = 0.5 on the non-frame terms in
the paper's order short-term, long-term, video; the mapping is unverified): ``tracking_weight`` = beta1,
``matching_weight`` = beta2, ``memory_weight`` = beta3, ``frame_weight`` = 1.

Each frame and reference is encoded ONCE per step; features are shared by every objective (the matching
term additionally encodes its B warped ``warp_size`` px images). A disabled term is not computed and is
reported as 0. With the split view (``batch["track_frames"]``, ``ClipSamplerConfig.crop_views="tracking"``)
the tracking term reads phi of those close-up frames instead (one more encode of B x T images).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from selfvos.pretrain.flow_explanation import FlowExplanation, FlowExplanationConfig
from selfvos.pretrain.frame import FrameObjective
from selfvos.pretrain.matching import CoAttentionMatching, MatchingConfig
from selfvos.pretrain.memory import VideoMemory
from selfvos.pretrain.model import MuGModel
from selfvos.pretrain.morel import MORELConfig, MORELObjective
from selfvos.pretrain.motion_heads import MotionPredictor
from selfvos.pretrain.sfm import SfMConfig, SfMObjective
from selfvos.pretrain.tracking import ForwardBackwardTracking, TrackingConfig

TERMS = ("frame", "tracking", "matching", "memory", "flow_explanation", "sfm", "morel")
# unit outputs of the motion heads: MOREL translations of 1/10 of the motion-size image side; SfM-Net rotations of
# 0.01 rad and translations of 0.1 depth-plane units (about a tenth of the image width at focal 1)
MOREL_SCALE = 0.1
SFM_SCALES = (0.01, 0.01, 0.01, 0.1, 0.1, 0.1)


@dataclass
class ObjectiveConfig:
    """Switches, weights and per-term settings of :class:`MuGObjective`."""

    frame: bool = True
    tracking: bool = True
    matching: bool = True
    memory: bool = True
    flow_explanation: bool = False
    sfm: bool = False
    morel: bool = False
    frame_weight: float = 1.0
    tracking_weight: float = 0.1  # beta1
    matching_weight: float = 0.02  # beta2
    memory_weight: float = 0.5  # beta3
    flow_explanation_weight: float = 1.0
    sfm_weight: float = 0.1  # its Charbonnier flow error is in pixels (a few px), ten times the frame BCE
    morel_weight: float = 1.0
    motion_scale: float = 0.5  # SfM-Net / MOREL work at this fraction of the clip size
    frame_on_refs: bool = True  # also supervise rho on reference frames that have a pseudo-mask
    tracking_cfg: TrackingConfig = field(default_factory=TrackingConfig)
    matching_cfg: MatchingConfig = field(default_factory=MatchingConfig)
    # the two segments are the frame head's p and 1 - p: ordered, so frame t+1 is compared channel by channel;
    # the error is divided by each image's flow variance, so the term is scale-free (about 0.2 at 128x224 on
    # DAVIS-2016 train, the size of the frame BCE) where GWM's plain px^2 gives about 5.5
    flow_explanation_cfg: FlowExplanationConfig = field(
        default_factory=lambda: FlowExplanationConfig(temporal_matching="identity", normalization="variance"))
    sfm_cfg: SfMConfig = field(default_factory=SfMConfig)
    morel_cfg: MORELConfig = field(default_factory=MORELConfig)

    def weights(self) -> Dict[str, float]:
        return {"frame": self.frame_weight, "tracking": self.tracking_weight,
                "matching": self.matching_weight, "memory": self.memory_weight,
                "flow_explanation": self.flow_explanation_weight, "sfm": self.sfm_weight, "morel": self.morel_weight}

    def enabled(self) -> Dict[str, bool]:
        return {name: bool(getattr(self, name)) for name in TERMS}


class MuGObjective(nn.Module):
    """``objective(model, batch)`` -> ``{"loss", "frame", "tracking", "matching", "memory", ...}``.

    ``loss`` carries the gradient; the per-term values are unweighted and detached. Matching also
    reports ``matching_transform`` and ``matching_consistency``. ``batch`` follows the pretraining batch
    contract (``frames`` (B, T, 3, H, W), ``pseudo_masks``, ``mask_valid``, ``refs``, ``ref_masks``, ``ref_valid``;
    optional ``track_frames`` (B, T, 3, H, W) for the tracking term; ``flow`` (B, T-1, 2, H, W) for the
    flow-explanation and SfM-Net terms). ``feature_channels``: C of the model's features, needed by the motion
    heads of the SfM-Net and MOREL terms.
    """

    def __init__(self, config: ObjectiveConfig | None = None, feature_channels: int | None = None) -> None:
        super().__init__()
        self.config = config or ObjectiveConfig()
        if not any(self.config.enabled().values()):
            raise ValueError("MuGObjective: every term is disabled; enable at least one of " + ", ".join(TERMS))
        self.frame_objective = FrameObjective()
        self.tracking_objective = ForwardBackwardTracking(self.config.tracking_cfg)
        self.matching_objective = CoAttentionMatching(self.config.matching_cfg)
        self.memory_objective = VideoMemory()
        self.flow_objective = FlowExplanation(self.config.flow_explanation_cfg)
        self.sfm_objective = SfMObjective(self.config.sfm_cfg)
        self.morel_objective = MORELObjective(self.config.morel_cfg)
        if (self.config.sfm or self.config.morel) and feature_channels is None:
            raise ValueError("the sfm and morel objectives need feature_channels (the model's feature channels C) "
                             "for their motion heads: MuGObjective(config, feature_channels=model.feature_channels)")
        if not 0 < self.config.motion_scale <= 1:
            raise ValueError(f"motion_scale must be in (0, 1], got {self.config.motion_scale}")
        if self.config.sfm:
            self.sfm_motion = MotionPredictor(feature_channels, 6, SFM_SCALES)
        if self.config.morel:
            self.morel_motion = MotionPredictor(feature_channels, 2, (MOREL_SCALE, MOREL_SCALE))

    def forward(self, model: MuGModel, batch: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        cfg = self.config
        on = cfg.enabled()
        frames = batch["frames"]
        refs = batch.get("refs")
        has_refs = refs is not None and refs.shape[1] > 0
        feats = model.encode(frames)  # (B, T, C, h, w), once
        need_refs = has_refs and (on["memory"] or on["matching"] or (on["frame"] and cfg.frame_on_refs))
        ref_feats = model.encode(refs) if need_refs else None  # (B, R, C, h', w'), once

        terms: Dict[str, torch.Tensor] = {}
        extras: Dict[str, torch.Tensor] = {}
        motion_terms = on["flow_explanation"] or on["sfm"] or on["morel"]
        frame_logits = model.frame_logits(feats) if on["frame"] or motion_terms else None
        if on["frame"]:
            loss = self.frame_objective(frame_logits, batch["pseudo_masks"], batch["mask_valid"])
            if ref_feats is not None and cfg.frame_on_refs and "ref_masks" in batch:
                ref_loss = self.frame_objective(model.frame_logits(ref_feats), batch["ref_masks"], batch["ref_valid"])
                n_frames = batch["mask_valid"].sum()
                n_refs = batch["ref_valid"].sum()
                loss = (loss * n_frames + ref_loss * n_refs) / (n_frames + n_refs).clamp(min=1)
            terms["frame"] = loss
        if on["tracking"]:
            close_up = batch.get("track_frames")
            terms["tracking"] = self.tracking_objective(feats if close_up is None else model.encode(close_up))
        if on["matching"]:
            out = self.matching_objective(model, frames, feats, refs if has_refs else None, ref_feats)
            terms["matching"] = out["loss"]
            extras["matching_transform"] = out["transform"].detach()
            extras["matching_consistency"] = out["consistency"].detach()
        if on["memory"]:
            if ref_feats is None:
                raise ValueError("the memory objective needs reference frames: batch['refs'] is missing or empty")
            terms["memory"] = self.memory_objective(model, feats, ref_feats, batch["pseudo_masks"], batch["mask_valid"])

        if on["flow_explanation"]:
            out = self.flow_explanation(frame_logits, batch)
            terms["flow_explanation"] = out["loss"]
            extras["flow_reconstruction"] = out["flow_reconstruction"].detach()
            extras["flow_temporal"] = out["temporal"].detach()
        if on["sfm"] or on["morel"]:
            terms.update(self.motion_terms(feats, frame_logits, batch, extras))

        weights = cfg.weights()
        total = sum(weights[name] * value for name, value in terms.items())
        zero = frames.new_zeros(())
        result: Dict[str, torch.Tensor] = {"loss": total}
        result.update({name: terms[name].detach() if name in terms else zero for name in TERMS})
        result.update(extras)
        return result

    def flow_explanation(self, frame_logits: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The flow-explanation terms of the frame head: logits (B, T, 1, h, w), ``batch["flow"]`` (B, T-1, 2, H, W)."""
        flow = batch.get("flow")
        if flow is None:
            raise ValueError("the flow_explanation objective needs batch['flow']: set clip.flow (the recipe does)")
        if frame_logits.shape[1] < 2:
            raise ValueError("the flow_explanation objective needs clips of at least 2 frames (clip.num_frames)")
        p = torch.sigmoid(frame_logits.float())
        segments = torch.cat([p, 1.0 - p], dim=2)  # (B, T, 2, h, w): object, background
        return self.flow_objective(segments[:, :-1].flatten(0, 1), flow.flatten(0, 1).float(),
                                   segments[:, 1:].flatten(0, 1))


    def motion_terms(self, feats: torch.Tensor, frame_logits: torch.Tensor, batch: Mapping[str, torch.Tensor],
                     extras: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The SfM-Net and MOREL terms (those switched on) between frames t and t+1 of every clip: features
        (B, T, C, h, w), frame logits (B, T, 1, h, w); adds their sub-terms to ``extras``."""
        cfg = self.config
        frames = batch["frames"]
        if frames.shape[1] < 2:
            raise ValueError("the sfm and morel objectives need clips of at least 2 frames (clip.num_frames)")
        height, width = frames.shape[-2:]
        size = (max(1, round(height * cfg.motion_scale)), max(1, round(width * cfg.motion_scale)))
        features_t, features_t1 = feats[:, :-1].flatten(0, 1), feats[:, 1:].flatten(0, 1)  # (N, C, h, w)
        low = torch.sigmoid(frame_logits[:, :-1].flatten(0, 1).float())  # (N, 1, h, w)
        masks = F.interpolate(low, size=size, mode="bilinear", align_corners=False)  # (N, 1, H', W')
        frame_t = F.interpolate(frames[:, :-1].flatten(0, 1).float(), size=size, mode="area")
        frame_t1 = F.interpolate(frames[:, 1:].flatten(0, 1).float(), size=size, mode="area")
        terms: Dict[str, torch.Tensor] = {}
        if cfg.morel:
            objects, camera = self.morel_motion(features_t, features_t1, low)
            out = self.morel_objective(masks, objects * max(size), frame_t, frame_t1, camera * max(size))
            terms["morel"] = out["loss"]
            extras.update(morel_photometric=out["photometric"], morel_sparsity=out["sparsity"])
        if cfg.sfm:
            flow = batch.get("flow")
            if flow is None:
                raise ValueError("the sfm objective needs batch['flow']: set clip.flow (the recipe does)")
            flow = F.interpolate(flow.flatten(0, 1).float(), size=size, mode="area")
            flow = flow * torch.tensor([size[1] / width, size[0] / height], dtype=flow.dtype)[None, :, None, None]
            objects, camera = self.sfm_motion(features_t, features_t1, low)
            out = self.sfm_objective(masks, camera, objects, flow=flow, frame_t=frame_t, frame_t1=frame_t1)
            terms["sfm"] = out["loss"]
            extras.update(sfm_flow=out["flow"], sfm_photometric=out["photometric"])
        return terms


class MuGPretrainer(nn.Module):
    """``MuGModel`` + ``MuGObjective`` behind ONE ``forward(batch)``, for ``accelerator.prepare``/DDP.

    DistributedDataParallel synchronises gradients only for computation run inside the wrapped
    module's ``forward``; the objectives call several model methods, so wrap both here.
    ``forward(batch)`` returns the objective's dict. With ablated terms some heads get no gradient:
    use ``find_unused_parameters=True`` then.
    """

    def __init__(self, model: MuGModel, objective: MuGObjective | None = None) -> None:
        super().__init__()
        self.model = model
        self.objective = objective or MuGObjective()

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return self.objective(self.model, batch)
