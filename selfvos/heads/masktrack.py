"""MaskTrack: the tracking branch of MaskTrack R-CNN (Yang, Fan, Xu, "Video Instance Segmentation", ICCV 2019) on
the shared selfvos backbone, for video instance segmentation (VIS) of the instances an instance source gives.

Per-frame instances (masks, boxes, detection scores, optional class scores) come from an instance source
(:mod:`selfvos.inference.vis`: masks given per frame or any detector; :mod:`selfvos.heads.vis_core`: RVOS zero-shot
instances); this head gives each instance an identity embedding and class scores and links instances across frames
(:class:`~selfvos.heads.vis_core.VISCore`).

Network (``MaskTrack``, architecture ``"masktrack"``):

- feature map: the backbone's ``layer2`` (1/8) and ``layer3`` (1/16) projected by 1x1 convolutions to
  ``feature_dim`` channels, the 1/16 map bilinearly upsampled and added to the 1/8 map, then a 3x3 convolution
  (a two-level FPN): ``phi`` (F, D, H/8, W/8);
- RoI feature of an instance with box ``b`` and mask ``m`` (plain torch, no torchvision): ``phi`` sampled
  bilinearly at the P x P bin centres of ``b`` (RoIAlign with one sample per bin, ``F.grid_sample``); with
  ``roi_pooling="mask"`` (default) the instance's mask coverage ``c`` (its mask area-averaged to the feature
  grid and sampled at the same points) multiplies the features and is appended: ``[phi(b) * c | c]``
  ((D + 1) x P x P), so other instances inside the box are masked out; ``"box"``: ``phi(b)`` (D x P x P);
- identity embedding ``f`` = FC-ReLU-FC of the flattened RoI feature (``hidden``, ``embed_dim``; the paper's
  tracking branch: 2 FC of 1024 on 7x7x256) and class logits = FC-ReLU-FC (``len(categories)`` classes).

Tracking branch (the paper's): for a new instance i and the memory identities n = 1..N,
``p_i(n) = exp(f_i . f_n) / (1 + sum_j exp(f_i . f_j))`` and ``p_i(new) = 1 / (1 + sum_j exp(f_i . f_j))``,
a softmax over ``[0, f_i . f_1, ..., f_i . f_N]`` (:func:`identity_logits`). Assignment score
(:func:`assignment_scores`), with ``s_i`` the detection score, ``b`` boxes and ``c`` classes::

    v_i(n)   = log p_i(n)   + alpha log s_i + beta IoU(b_i, b_n) + gamma [c_i = c_n]
    v_i(new) = log p_i(new) + alpha log s_i + gamma

(the "new" column carries IoU 0 and class agreement 1, as the released MaskTrack R-CNN code pads it, so gamma
penalises a class change instead of rewarding every same-class identity over "new"). Defaults alpha = 1,
beta = 2, gamma = 10 (the released code's ``match_coeff``, mmtracking's ``match_weights``). Instances and
identities are assigned one-to-one by the Hungarian algorithm (:func:`assign_identities`) over
``[v_i(1..N) | v_i(new)]`` with one "new" column per instance (the released code takes each instance's argmax
and drops the loser of a conflict; Hungarian never drops an instance); alpha log s_i is then the same on every
column of row i and only the detection threshold ``score_threshold`` acts on scores.

Training (``forward(batch)``, the supervised clip batch of the one-shot heads: ``frames`` (B, T, 3, H, W),
``masks`` (B, T, H, W) ids, ``object_valid`` (B, K); optional ``instance_classes`` (B, K) category indices,
default 0): instances are the ground-truth objects of each frame (as MaskTrack R-CNN trains its tracking branch
on ground-truth boxes), boxes are their masks' extents jittered by up to ``box_jitter`` of the box size; frame 0
of each clip is the reference whose instances are the memory (each identity hidden with probability
``memory_drop``, so that "new" is learnt); each instance of frames 1..T-1 has target y = its memory position
(1..N) or 0 (new). Loss ``extra_loss = identity_weight * mean_i -log p_i(y_i) + class_weight * CE(class)``,
added by :class:`~selfvos.finetune.losses.SegmentationLoss`; no frame is segmented (``logits`` (B, 0, K+1, H, W),
``frames`` empty), so the pixel terms are 0. ``training_task`` is ``"vis"``.

Reduced versus the paper (CPU budget): ResNet-18 with a two-level FPN of 64 channels instead of ResNet-50-FPN 256,
FC widths 256 / 128 instead of 1024 / 1024; no detector is trained (instances come from a source).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfvos.backbones import BackboneConfig, backbone_from_config
from selfvos.errors import SelfvosInputError
from selfvos.heads.base import HeadConfig, VOSHead, one_hot_objects
from selfvos.hub.mixin import ModelInfo, register_architecture
from selfvos.inference.vis import jitter_boxes, mask_boxes
from selfvos.registry import CORES

VOID = 255
POOLINGS = ("mask", "box")


@dataclass
class MaskTrackInferenceConfig:
    """Test-time tracking settings (module docstring): ``alpha``, ``beta``, ``gamma`` weight log s, box IoU and class
    agreement in v; instances scoring below ``score_threshold`` are dropped; an identity last seen more than
    ``retain_frames`` frames ago leaves the memory (its track is kept; 0 = never leaves); frames are processed at
    longest side ``max_side`` (0 = as given)."""

    alpha: float = 1.0
    beta: float = 2.0
    gamma: float = 10.0
    score_threshold: float = 0.05
    retain_frames: int = 20
    max_side: int = 432

    def __post_init__(self) -> None:
        if min(self.alpha, self.beta, self.gamma) < 0 or not 0 <= self.score_threshold <= 1:
            raise ValueError(f"need alpha, beta, gamma >= 0 and score_threshold in [0, 1], got {self}")
        if self.retain_frames < 0 or self.max_side < 0:
            raise ValueError(f"need retain_frames >= 0 and max_side >= 0, got {self}")


@HeadConfig.register_subclass("masktrack")
@dataclass
class MaskTrackConfig(HeadConfig):
    """Architecture and training of :class:`MaskTrack` (module docstring). ``categories``: class names, index c
    is category ``c + 1`` of a YouTube-VIS file (default one class-agnostic ``"object"``)."""

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(
        name="resnet18", output_stride=16, return_layers=("layer2", "layer3")))
    feature_dim: int = 64
    roi_size: int = 7
    roi_pooling: str = "mask"
    hidden: int = 256
    embed_dim: int = 128
    categories: Tuple[str, ...] = ("object",)
    identity_weight: float = 1.0
    class_weight: float = 1.0
    memory_drop: float = 0.2
    box_jitter: float = 0.1
    inference: MaskTrackInferenceConfig = field(default_factory=MaskTrackInferenceConfig)

    def __post_init__(self) -> None:
        self.categories = tuple(str(c) for c in self.categories)
        if self.roi_pooling not in POOLINGS:
            raise ValueError(f"roi_pooling must be one of {POOLINGS}, got {self.roi_pooling!r}")
        if len(self.backbone.return_layers) != 2:
            raise ValueError(f"backbone.return_layers needs a fine and a coarse layer, got {self.backbone.return_layers}")
        if not self.categories or min(self.feature_dim, self.roi_size, self.hidden, self.embed_dim) < 1:
            raise ValueError(f"need categories and positive sizes, got {self}")
        if not 0 <= self.memory_drop < 1 or self.box_jitter < 0 or min(self.identity_weight, self.class_weight) < 0:
            raise ValueError(f"need memory_drop in [0, 1), box_jitter >= 0 and weights >= 0, got {self}")


# ---------------------------------------------------------------------------------------- tracking branch


def identity_logits(queries: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """queries (M, E), memory (N, E) -> (M, N + 1): column 0 the fixed "new" logit 0, column n the dot product
    ``f_i . f_n``; its softmax is the paper's p_i(new), p_i(1..N)."""
    return torch.cat([queries.new_zeros(len(queries), 1), queries @ memory.T], dim=1)


def identity_loss(queries: torch.Tensor, memory: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the M queries of ``-log p_i(y_i)``; targets (M,) long, 0 = new, n = memory row n - 1."""
    return F.cross_entropy(identity_logits(queries, memory), targets)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(M, 4), (N, 4) xyxy boxes -> (M, N) IoU ``|a & b| / |a | b|`` (0 for empty unions)."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


def assignment_scores(log_p: torch.Tensor, scores: torch.Tensor, ious: torch.Tensor, same_class: torch.Tensor,
                      alpha: float, beta: float, gamma: float) -> torch.Tensor:
    """log_p (M, N + 1) (column 0 = new), scores (M,) in (0, 1], ious (M, N), same_class (M, N) bool ->
    v (M, N + 1): ``v_i(n) = log p_i(n) + alpha log s_i + beta IoU_in + gamma [c_i = c_n]``, column 0
    ``log p_i(new) + alpha log s_i + gamma`` (IoU 0, class agreement 1 for "new")."""
    iou = torch.cat([ious.new_zeros(len(ious), 1), ious], dim=1)
    agree = torch.cat([same_class.new_ones(len(same_class), 1), same_class], dim=1).to(log_p.dtype)
    log_s = torch.log(scores.to(log_p.dtype).clamp(min=1e-12))[:, None]
    return log_p + alpha * log_s + beta * iou + gamma * agree


def assign_identities(v: torch.Tensor) -> torch.Tensor:
    """v (M, N + 1) -> (M,) long: the memory row (0..N-1) given to each instance, -1 for "new". One-to-one,
    maximising ``sum_i v_i(choice_i)`` (``scipy.optimize.linear_sum_assignment`` over ``[v_i(1..N) | diag
    v_i(new)]``, one "new" column per instance)."""
    from scipy.optimize import linear_sum_assignment

    m, n = v.shape[0], v.shape[1] - 1
    if m == 0:
        return torch.zeros(0, dtype=torch.long)
    values = v.detach().double().cpu().numpy()
    new = np.full((m, m), -1e18)
    np.fill_diagonal(new, values[:, 0])
    rows, cols = linear_sum_assignment(np.concatenate([values[:, 1:], new], axis=1), maximize=True)
    out = torch.full((m,), -1, dtype=torch.long)
    out[torch.as_tensor(rows)] = torch.as_tensor(np.where(cols < n, cols, -1), dtype=torch.long)
    return out


# ------------------------------------------------------------------------------------------------ network


@register_architecture
class MaskTrack(VOSHead):
    """MaskTrack tracking + class branch on the shared backbone; see the module docstring."""

    architecture = "masktrack"
    tasks = ("vis",)
    info = ModelInfo(summary="a MaskTrack R-CNN-style video instance segmentation head (Yang et al., ICCV 2019): "
                             "per-instance RoI features on the shared backbone, an identity embedding matched to "
                             "the memory identities or 'new' by p_i(n) combined with score, box IoU and class, "
                             "and a class head; instances come from a pluggable source (RVOS, a detector, masks).",
                     papers=("masktrack",),
                     limitation="Tracks and classifies the instances its source gives; it does not detect them.")

    @classmethod
    def training_task(cls, config: MaskTrackConfig) -> str:
        """What the fine-tuning recipe trains: ``"vis"`` (identity + class losses, no pixel logits)."""
        return "vis"

    def __init__(self, config: Optional[MaskTrackConfig] = None) -> None:
        super().__init__()
        self.config = cfg = config or MaskTrackConfig()
        self.backbone = backbone_from_config(cfg.backbone)
        self.layers = tuple(self.backbone.return_layers)  # fine, coarse
        self.lateral = nn.ModuleList([nn.Conv2d(self.backbone.out_channels[n], cfg.feature_dim, 1) for n in self.layers])
        self.smooth = nn.Conv2d(cfg.feature_dim, cfg.feature_dim, 3, padding=1)
        channels = cfg.feature_dim + (1 if cfg.roi_pooling == "mask" else 0)
        flat = channels * cfg.roi_size ** 2
        self.track_head = nn.Sequential(nn.Linear(flat, cfg.hidden), nn.ReLU(inplace=True),
                                        nn.Linear(cfg.hidden, cfg.embed_dim))
        self.class_head = nn.Sequential(nn.Linear(flat, cfg.hidden), nn.ReLU(inplace=True),
                                        nn.Linear(cfg.hidden, len(cfg.categories)))

    @property
    def stride(self) -> int:
        """Input multiple that keeps the two levels aligned (the coarse level's stride); inputs are padded to it."""
        return int(self.backbone.strides[self.layers[1]])

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(F, 3, H, W) in [0, 1], H and W multiples of ``stride`` -> phi (F, feature_dim, H/s, W/s), s the fine
        level's stride (8 by default)."""
        feats = self.backbone(self.normalize(images))
        fine, coarse = (lat(feats[n]) for lat, n in zip(self.lateral, self.layers))
        return self.smooth(fine + F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False))

    def roi_features(self, phi: torch.Tensor, frame_index: torch.Tensor, boxes: torch.Tensor,
                     masks: torch.Tensor) -> torch.Tensor:
        """phi (F, D, h, w); per instance its frame (N,) long, box (N, 4) xyxy in pixels of the image phi was
        computed from (size (s h, s w), s the fine stride), mask (N, s h, s w) -> (N, D (+1), P, P) RoI features."""
        p, s = self.config.roi_size, int(self.backbone.strides[self.layers[0]])
        h, w = phi.shape[-2:]
        scale = boxes.new_tensor([1.0 / (w * s), 1.0 / (h * s)]).repeat(2)
        x0, y0, x1, y1 = (boxes * scale).unbind(1)
        steps = (torch.arange(p, device=phi.device, dtype=phi.dtype) + 0.5) / p
        xs = x0[:, None] + steps[None] * (x1 - x0)[:, None]  # (N, P) in [0, 1]
        ys = y0[:, None] + steps[None] * (y1 - y0)[:, None]
        grid = torch.stack([xs[:, None, :].expand(-1, p, -1), ys[:, :, None].expand(-1, -1, p)], dim=-1) * 2 - 1
        pooled = F.grid_sample(phi[frame_index], grid, mode="bilinear", align_corners=False)
        if self.config.roi_pooling == "box":
            return pooled
        coverage = F.interpolate(masks[:, None].float(), size=(h, w), mode="area")
        coverage = F.grid_sample(coverage, grid, mode="bilinear", align_corners=False)
        return torch.cat([pooled * coverage, coverage], dim=1)

    def embed(self, phi: torch.Tensor, frame_index: torch.Tensor, boxes: torch.Tensor,
              masks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Identity embeddings (N, embed_dim) and class logits (N, C) of N instances (see ``roi_features``)."""
        roi = self.roi_features(phi, frame_index, boxes, masks).flatten(1)
        return self.track_head(roi), self.class_head(roi)

    # --- training -----------------------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
        """Identity + class losses on ground-truth instances (module docstring). Returns empty ``logits`` /
        ``frames``, ``extra_loss``, ``identity_loss``, ``class_loss``, ``identity_targets`` (M,) and
        ``identity_accuracy`` (fraction of the M query instances whose argmax p is their target)."""
        frames, masks = batch["frames"], batch["masks"]
        b, t, _, h, w = frames.shape
        if t < 2:
            raise ValueError(f"masktrack trains on clips of at least 2 frames, got {t}")
        valid = batch.get("object_valid")
        k = valid.shape[1] if valid is not None else int(masks[masks != VOID].max().clamp(min=1))
        if valid is None:
            valid = torch.ones(b, k, dtype=torch.bool, device=masks.device)
        phi = self.features(frames.flatten(0, 1))
        objects = one_hot_objects(masks.flatten(0, 1), k).bool()  # (B*T, K, H, W)
        present = objects.flatten(2).any(-1) & valid.repeat_interleave(t, dim=0)
        index = present.nonzero()  # (N, 2): frame b * t + i, object
        inst_masks = objects[index[:, 0], index[:, 1]]
        boxes = mask_boxes(inst_masks)
        if self.training:
            boxes = jitter_boxes(boxes, self.config.box_jitter, (h, w))
        empty = {"logits": frames.new_zeros(b, 0, k + 1, h, w), "frames": torch.arange(0, device=frames.device)}
        if not len(index):
            zero = phi.sum() * 0.0
            return {**empty, "extra_loss": zero, "identity_loss": zero, "class_loss": zero,
                    "identity_targets": torch.zeros(0, dtype=torch.long), "identity_accuracy": 1.0}
        emb, class_logits = self.embed(phi, index[:, 0], boxes, inst_masks)
        classes = batch.get("instance_classes")
        class_targets = (classes[index[:, 0] // t, index[:, 1]] if classes is not None
                         else torch.zeros(len(index), dtype=torch.long, device=frames.device))
        class_loss = F.cross_entropy(class_logits, class_targets)
        clip, step = index[:, 0] // t, index[:, 0] % t
        logits, targets = [], []
        for j in range(b):
            ref = ((clip == j) & (step == 0)).nonzero().flatten()
            if self.training and self.config.memory_drop:
                ref = ref[torch.rand(len(ref), device=ref.device) >= self.config.memory_drop]
            memory_ids = index[ref, 1]
            for i in range(1, t):
                query = ((clip == j) & (step == i)).nonzero().flatten()
                if not len(query):
                    continue
                match = index[query, 1][:, None] == memory_ids[None]  # (M, N)
                # "new" (0) where no memory identity matches, e.g. every reference dropped (memory_drop)
                nearest = match.float().argmax(1) + 1 if match.shape[1] else torch.zeros_like(index[query, 1])
                targets.append(torch.where(match.any(1), nearest, 0))
                logits.append(identity_logits(emb[query], emb[ref]))
        if logits:
            id_losses = [F.cross_entropy(z, y, reduction="sum") for z, y in zip(logits, targets)]
            identity = torch.stack(id_losses).sum() / sum(len(y) for y in targets)
            hits = sum(int((z.argmax(1) == y).sum()) for z, y in zip(logits, targets))
            accuracy = hits / sum(len(y) for y in targets)
            all_targets = torch.cat(targets)
        else:
            identity, accuracy, all_targets = emb.sum() * 0.0, 1.0, torch.zeros(0, dtype=torch.long)
        cfg = self.config
        return {**empty, "extra_loss": cfg.identity_weight * identity + cfg.class_weight * class_loss,
                "identity_loss": identity, "class_loss": class_loss, "identity_targets": all_targets,
                "identity_accuracy": accuracy}


def masktrack_core(model: MaskTrack, task: str, options: Mapping[str, Any]) -> Any:
    """The ``CORES`` factory: the VIS core (:class:`~selfvos.heads.vis_core.VISCore`) over the instance source
    ``options["instances"]``; ``options["head"]`` overrides ``config.inference``, ``options["max_side"]`` its
    ``max_side``. Only ``task == "vis"`` (see :func:`selfvos.heads.vis_core.create_vis_core`)."""
    import dataclasses

    from selfvos.heads.vis_core import VISCore
    from selfvos.inference.core import inference_settings

    if task != "vis":
        raise SelfvosInputError("masktrack", f"the masktrack model runs vis only, not {task}")
    if options.get("instances") is None:
        raise SelfvosInputError("masktrack", "the vis core needs an instance source (options['instances'])")
    settings = inference_settings(model, options)
    if options.get("max_side") is not None:
        settings = dataclasses.replace(settings, max_side=int(options["max_side"]))
    return VISCore(model, settings, options["instances"])


CORES.register("masktrack")(masktrack_core)
