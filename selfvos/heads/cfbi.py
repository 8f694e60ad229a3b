"""CFBI and CFBI+: collaborative foreground-background integration for one-shot VOS (Yang et al., ECCV 2020;
multi-scale + atrous matching, TPAMI 2021) on the shared selfvos backbone.

One network family, two registered architectures: ``CFBI`` (``"cfbi"``, one matching scale at 1/8, backbone
output stride 8) and ``CFBIPlus`` (``"cfbi_plus"``, matching at 1/8 and 1/16, output stride 16, atrous rate
l = 2 at the finest scale). Labels ``l = 0..K`` are the background and the K objects; each is predicted by
the same ensembler, as in CFBI.

- Pixel embeddings: an FPN over backbone ``layer2`` (1/8) and ``layer3`` (1/8 or 1/16), then per matching
  scale s a 3x3 + 1x1 head -> ``e_s`` (B, C_s, h_s, w_s).
- Pixel-level matching (``selfvos.layers.matching``), with distance ``D(p, q) = 1 - 2 / (1 + exp(||e_p - e_q||^2
  + b))`` and learnable biases ``b_F`` (q in the label) and ``b_B`` (q in its complement), one pair per scale:
  global ``G_l(p) = min_{q in P_{1,l}} D`` and ``Gbar_l(p) = min_{q not in P_{1,l}} D`` to the first frame;
  multi-local ``L_l(p, k)``, ``Lbar_l(p, k)`` to the previous frame inside windows of radius k in ``radii[s]``.
  Atrous matching (rate l): global matching keeps every l-th reference pixel (``stride=l``), local matching
  walks the same windows in steps of l (``radii // l`` positions, ``dilation=l``); l = 1 is plain matching.
- Instance-level attention: guidance ``g_l`` = mask-weighted mean embeddings of label l and of its complement
  in the first and the previous frame, all scales concatenated (B, L, 4 sum C_s); every ensembler block
  first multiplies its input channels by ``sigmoid(FC(g_l))`` in (0, 1).
- Collaborative ensembler, per label, per scale: ``[e_s, G, Gbar, L(k...), Lbar(k...), previous probability]``
  -> 3x3 conv (+ a strided conv of the finer stage, CFBI+'s bottom-up stages) -> ``blocks`` gated residual
  blocks; then top-down (1/16 -> 1/8, 1x1 conv + add) and a DeepLabv3+-style 1/4 decoder (concat with
  projected backbone ``layer1``, residual block) -> 1 logit.
  The L+1 label logits are upsampled bilinearly and normalised by a softmax over labels (CFBI's aggregation;
  padded objects get -1e4).

Reduced versus the papers, for 2-core CPU training (paper values in brackets): ResNet-18 [DeepLabv3+
ResNet-101]; matching at 1/8 (+1/16) [1/4 (+1/8, 1/16)]; embedding channels 32 / 64 [100; CFBI+ 32/64/128];
window radii (2, 4, 7) at 1/8 for CFBI, (2, 4, 6) and (2, 4) for CFBI+ [{4..24} at 1/4, {2..12} at 1/8,
{4..10} at 1/16 — the same reach in image pixels for the smallest windows]; ensembler widths 32 / 64 with 2
gated blocks per stage [256 channels, 3 stages of bottlenecks + ASPP]; decoder 16 channels. The gate is a
sigmoid (official code: ``1 + tanh``), with no dynamic final classifier.
Training (``forward``): frame 0's ground truth is the reference and the first "previous" frame; frames
1..T-1 are segmented in order, each with the model's own softmax of the frame before. Loss: bootstrapped
cross-entropy on the hardest 15 % of pixels (recipe). Inference (``CFBIInferenceCore``): state = the first
frame's embeddings + masks and the previous frame's embeddings + prediction, so it is flat in the video length.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfvos.backbones import BackboneConfig, backbone_from_config
from selfvos.heads.base import HeadConfig, OneShotCore, VOSHead, one_hot_objects, head_core, segmentation_online_loss
from selfvos.hub.mixin import ModelInfo, register_architecture
from selfvos.layers import ResBlock, global_matching, local_matching
from selfvos.registry import CORES, ONLINE_LOSSES

State = List[Dict[str, torch.Tensor]]  # per scale: emb (B,C,h,w), fg (B,L,h,w) bool, soft (B,L,h,w), pooled (B,L,2C)


@dataclass
class CFBIInferenceConfig:
    """chunk: query pixels per block of global matching (bounds its (chunk x reference pixels) distances)."""

    chunk: int = 4096


@HeadConfig.register_subclass("cfbi")
@dataclass
class CFBIConfig(HeadConfig):
    """Architecture of :class:`CFBI`; per-scale tuples run finest (1/8) first.

    backbone: ResNet returning layer1 (1/4), layer2 (1/8), layer3 (1/8 at output stride 8, 1/16 at 16).
    scales: matching strides, ``(8,)`` or ``(8, 16)`` (the latter needs output stride 16).
    embed_dims / ensembler_dims: embedding and ensembler channels per scale; fpn_dim: FPN channels.
    radii: multi-local window radii per scale, in pixels of that scale (divisible by the atrous rate).
    atrous: atrous rate l per scale (global stride l, local dilation l; 1 = plain matching).
    blocks: gated residual blocks per ensembler stage; decoder_dim: channels of the 1/4 decoder.
    """

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(
        name="resnet18", output_stride=8, return_layers=("layer1", "layer2", "layer3")))
    scales: Tuple[int, ...] = (8,)
    fpn_dim: int = 64
    embed_dims: Tuple[int, ...] = (32,)
    radii: Tuple[Tuple[int, ...], ...] = ((2, 4, 7),)
    atrous: Tuple[int, ...] = (1,)
    ensembler_dims: Tuple[int, ...] = (32,)
    blocks: int = 2
    decoder_dim: int = 16
    inference: CFBIInferenceConfig = field(default_factory=CFBIInferenceConfig)

    def __post_init__(self) -> None:
        n = len(self.scales)
        if tuple(self.scales) not in ((8,), (8, 16)) or (n == 2 and self.backbone.output_stride != 16):
            raise ValueError(f"scales must be (8,) or (8, 16) (with output_stride 16), got {self.scales}")
        if {len(self.embed_dims), len(self.radii), len(self.atrous), len(self.ensembler_dims)} != {n}:
            raise ValueError("embed_dims, radii, atrous and ensembler_dims need one entry per scale")
        if tuple(self.backbone.return_layers) != ("layer1", "layer2", "layer3"):
            raise ValueError(f"CFBI needs backbone return_layers layer1..layer3, got {self.backbone.return_layers}")
        for rate, radii in zip(self.atrous, self.radii):
            if rate < 1 or not radii or any(r < rate or r % rate for r in radii):
                raise ValueError(f"radii {radii} must be positive multiples of the atrous rate {rate}")


@HeadConfig.register_subclass("cfbi_plus")
@dataclass
class CFBIPlusConfig(CFBIConfig):
    """:class:`CFBIConfig` with CFBI+'s defaults: matching at 1/8 and 1/16, atrous rate 2 at 1/8."""

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(
        name="resnet18", output_stride=16, return_layers=("layer1", "layer2", "layer3")))
    scales: Tuple[int, ...] = (8, 16)
    embed_dims: Tuple[int, ...] = (32, 64)
    radii: Tuple[Tuple[int, ...], ...] = ((2, 4, 6), (2, 4))
    atrous: Tuple[int, ...] = (2, 1)
    ensembler_dims: Tuple[int, ...] = (32, 64)


def label_probabilities(masks: torch.Tensor, num_objects: int) -> torch.Tensor:
    """(B, H, W) ids -> (B, K+1, H, W) one-hot over background + objects (void counts as background)."""
    objects = one_hot_objects(masks, num_objects)
    return torch.cat([1.0 - objects.sum(dim=1, keepdim=True).clamp(max=1.0), objects], dim=1)


@register_architecture
class CFBI(VOSHead):
    """CFBI: foreground-background matching + instance attention + collaborative ensembler (module docstring)."""

    architecture = "cfbi"
    tasks = ("one-shot",)
    info = ModelInfo(summary="a CFBI one-shot VOS head (Yang et al., ECCV 2020): global and multi-local matching "
                             "of foreground AND background with learnable biases, instance-level attention, "
                             "collaborative ensembler; background and objects share one ensembler, softmax.",
                     papers=("cfbi",),
                     limitation="One-shot: it needs the first frame's mask of every object to follow.")

    def __init__(self, config: Optional[CFBIConfig] = None) -> None:
        super().__init__()
        self.config = cfg = config or CFBIConfig()
        self.backbone = backbone_from_config(cfg.backbone)
        c1, c2, c3 = (self.backbone.out_channels[name] for name in ("layer1", "layer2", "layer3"))
        self.lateral = nn.ModuleList([nn.Conv2d(c2, cfg.fpn_dim, 1), nn.Conv2d(c3, cfg.fpn_dim, 1)])
        self.embed = nn.ModuleList([nn.Sequential(nn.Conv2d(cfg.fpn_dim, cfg.fpn_dim, 3, padding=1), nn.ReLU(),
                                                  nn.Conv2d(cfg.fpn_dim, d, 1)) for d in cfg.embed_dims])
        n = len(cfg.scales)
        self.fg_bias = nn.Parameter(torch.zeros(n))  # b_F per scale
        self.bg_bias = nn.Parameter(torch.zeros(n))  # b_B per scale
        guide = 4 * sum(cfg.embed_dims)
        dims = cfg.ensembler_dims
        self.stem = nn.ModuleList([nn.Conv2d(d + 3 + 2 * len(r), w, 3, padding=1)
                                   for d, r, w in zip(cfg.embed_dims, cfg.radii, dims)])
        self.down = nn.ModuleList([nn.Conv2d(dims[s - 1], dims[s], 3, stride=2, padding=1) for s in range(1, n)])
        self.up = nn.ModuleList([nn.Conv2d(dims[s], dims[s - 1], 1) for s in range(1, n)])
        self.gates = nn.ModuleList([nn.ModuleList([nn.Linear(guide, w) for _ in range(cfg.blocks)]) for w in dims])
        self.stages = nn.ModuleList([nn.ModuleList([ResBlock(w, w) for _ in range(cfg.blocks)]) for w in dims])
        self.low = nn.Conv2d(c1, cfg.decoder_dim, 1)
        self.top = nn.Conv2d(dims[0], cfg.decoder_dim, 1)
        self.fuse = ResBlock(2 * cfg.decoder_dim, cfg.decoder_dim)
        self.predict = nn.Conv2d(cfg.decoder_dim, 1, 3, padding=1)

    # --- embeddings and per-frame state -----------------------------------------------------------------
    def embed_frames(self, frames: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """(N, 3, H, W) in [0, 1] -> ``low`` = decoder projection of layer1 (N, D, H/4, W/4), embeddings [e_s]."""
        feats = self.backbone(self.normalize(frames))
        top = self.lateral[1](feats["layer3"])
        p8 = self.lateral[0](feats["layer2"])
        p8 = p8 + F.interpolate(top, size=p8.shape[-2:], mode="bilinear", align_corners=False)
        levels = {8: p8, 16: top}
        return self.low(feats["layer1"]), [head(levels[s]) for head, s in zip(self.embed, self.config.scales)]

    def describe(self, embeddings: List[torch.Tensor], probabilities: torch.Tensor) -> State:
        """A frame as a reference / previous frame: per scale its embeddings, each label's hard mask (argmax of the
        area-pooled label probabilities (B, L, H, W), plus the label's strongest cell if its pooled probability
        reaches 0.1 there, so objects smaller than a cell still match), soft mask, and pooled label / complement
        embeddings."""
        state = []
        for emb in embeddings:
            soft = F.adaptive_avg_pool2d(probabilities, emb.shape[-2:])  # (B, L, h, w)
            fg = F.one_hot(soft.argmax(dim=1), soft.shape[1]).permute(0, 3, 1, 2).bool()
            peak = soft.amax(dim=(2, 3), keepdim=True)
            fg = fg | ((soft == peak) & (peak >= 0.1))  # a label smaller than a cell keeps its strongest cell
            area = soft.sum(dim=(2, 3)).unsqueeze(-1)  # (B, L, 1)
            inside = torch.einsum("blhw,bchw->blc", soft, emb)
            outside = emb.sum(dim=(2, 3)).unsqueeze(1) - inside
            total = float(soft.shape[-2] * soft.shape[-1])
            pooled = torch.cat([inside / (area + 1e-5), outside / (total - area + 1e-5)], dim=-1)
            state.append({"emb": emb, "fg": fg, "soft": soft, "pooled": pooled})
        return state

    # --- matching, attention, ensembler -----------------------------------------------------------------
    def match(self, s: int, query: torch.Tensor, reference: Mapping[str, torch.Tensor],
              previous: Mapping[str, torch.Tensor], chunk: int = 4096) -> torch.Tensor:
        """Scale s: query (B, C, h, w) -> (B, L, 2 + 2R, h, w) = [G, Gbar, L(k_1..k_R), Lbar(k_1..k_R)] per label.
        The background maps match the complement of each label's mask, with the bias b_B instead of b_F."""
        cfg = self.config
        b, labels = reference["fg"].shape[:2]
        bias = torch.cat([self.fg_bias[s].expand(b, labels), self.bg_bias[s].expand(b, labels)], dim=1)
        rate = cfg.atrous[s]
        ref_masks = torch.cat([reference["fg"], ~reference["fg"]], dim=1)
        prev_masks = torch.cat([previous["fg"], ~previous["fg"]], dim=1)
        glob = global_matching(query, reference["emb"], ref_masks, bias, stride=rate, chunk=chunk)  # (B, 2L, h, w)
        loc = local_matching(query, previous["emb"], prev_masks, [r // rate for r in cfg.radii[s]],
                             dilation=rate, bias=bias).transpose(1, 2)  # (B, 2L, R, h, w)
        return torch.cat([glob[:, :labels, None], glob[:, labels:, None], loc[:, :labels], loc[:, labels:]], dim=2)

    def gate(self, s: int, j: int, guide: torch.Tensor) -> torch.Tensor:
        """Instance-level attention of block j of stage s: guidance (N, 4 sum C) -> channel weights (N, W_s) in (0, 1)."""
        return torch.sigmoid(self.gates[s][j](guide))

    def segment(self, low: torch.Tensor, embeddings: List[torch.Tensor], reference: State, previous: State,
                size: Tuple[int, int], valid: Optional[torch.Tensor] = None, chunk: int = 4096) -> torch.Tensor:
        """One frame: ``low`` (B, D, H/4, W/4), embeddings [e_s], reference / previous states -> (B, L, H, W) logits
        over background + objects; valid (B, K) bool (padded objects get -1e4)."""
        b, labels = reference[0]["fg"].shape[:2]
        guide = torch.cat([torch.cat([r["pooled"], p["pooled"]], dim=-1) for r, p in zip(reference, previous)],
                          dim=-1).flatten(0, 1)  # (B*L, 4 sum C)
        outputs, x = [], None
        for s, emb in enumerate(embeddings):
            maps = self.match(s, emb, reference[s], previous[s], chunk)
            per_label = torch.cat([emb.unsqueeze(1).expand(-1, labels, -1, -1, -1), maps,
                                   previous[s]["soft"].unsqueeze(2)], dim=2).flatten(0, 1)
            x = self.stem[s](per_label) + (self.down[s - 1](x) if s else 0.0)
            for j, block in enumerate(self.stages[s]):
                x = block(x * self.gate(s, j, guide)[:, :, None, None])
            outputs.append(x)
        y = outputs[-1]
        for s in range(len(outputs) - 1, 0, -1):  # top-down: coarse -> fine
            y = outputs[s - 1] + self.up[s - 1](F.interpolate(y, size=outputs[s - 1].shape[-2:], mode="bilinear",
                                                              align_corners=False))
        low = low.repeat_interleave(labels, dim=0)
        z = torch.cat([low, F.interpolate(self.top(y), size=low.shape[-2:], mode="bilinear", align_corners=False)], 1)
        logits = self.predict(F.relu(self.fuse(z)))
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False).reshape(b, labels, *size)
        if valid is not None:
            keep = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1).bool()[:, :, None, None]
            logits = torch.where(keep, logits, torch.full_like(logits, -1e4))
        return logits

    # --- training ---------------------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Clip frames (B, T, 3, H, W), first-frame ids ``masks[:, 0]`` -> logits (B, T-1, K+1, H, W) of frames 1..T-1."""
        frames, masks = batch["frames"], batch["masks"]
        b, t = frames.shape[:2]
        if t < 2:
            raise ValueError(f"CFBI trains on clips of at least 2 frames, got {t}")
        valid = batch.get("object_valid")
        k = valid.shape[1] if valid is not None else int(masks[:, 0][masks[:, 0] != 255].max().clamp(min=1))
        size = tuple(frames.shape[-2:])
        low, embs = self.embed_frames(frames.flatten(0, 1))
        low = low.reshape(b, t, *low.shape[1:])
        embs = [e.reshape(b, t, *e.shape[1:]) for e in embs]
        reference = previous = self.describe([e[:, 0] for e in embs], label_probabilities(masks[:, 0], k))
        outputs = []
        for i in range(1, t):
            logits = self.segment(low[:, i], [e[:, i] for e in embs], reference, previous, size, valid)
            outputs.append(logits)
            if i < t - 1:
                previous = self.describe([e[:, i] for e in embs], torch.softmax(logits, dim=1))
        return {"logits": torch.stack(outputs, dim=1), "frames": torch.arange(1, t, device=frames.device)}


@register_architecture
class CFBIPlus(CFBI):
    """CFBI+: CFBI with multi-scale matching (1/8 and 1/16 here) and atrous matching (rate 2 at 1/8)."""

    architecture = "cfbi_plus"
    info = ModelInfo(summary="a CFBI+ one-shot VOS head (Yang et al., TPAMI 2021): CFBI's foreground-background "
                             "matching at several scales with atrous matching, fused in the ensembler.",
                     papers=("cfbi",),
                     limitation="One-shot: it needs the first frame's mask of every object to follow.")

    def __init__(self, config: Optional[CFBIPlusConfig] = None) -> None:
        super().__init__(config or CFBIPlusConfig())


class CFBIInferenceCore(OneShotCore):
    """Per-video CFBI state: object ids, the first frame's state and the previous frame's state (bounded).

    ``step(frame (H, W, 3) uint8, mask=None) -> (K+1, H, W)`` probabilities. The first step needs a mask (its
    ids, void 255 excluded, are the objects); a later mask replaces the prediction (a correction) and becomes
    the previous frame. Frames are padded (replicate) to a multiple of 16 and cropped back.
    """

    def reset(self) -> None:
        super().reset()
        self._reference: Optional[State] = None
        self._previous: Optional[State] = None

    @property
    def state_bytes(self) -> int:
        """Bytes of the tensors the core keeps between frames."""
        states = [s for s in (self._reference, self._previous) if s is not None]
        return sum(x.numel() * x.element_size() for state in states for scale in state for x in scale.values())

    @torch.inference_mode()
    def step(self, frame: np.ndarray, mask: Optional[np.ndarray] = None) -> torch.Tensor:
        device = self.device
        image, (h, w) = self.image(frame, 16)
        padded = tuple(image.shape[-2:])
        self.read_mask(mask, first=self._reference is None)
        low, embs = self.model.embed_frames(image)
        if mask is not None:
            ids = torch.from_numpy(np.asarray(mask, dtype=np.int64)).to(device)
            remap = torch.zeros(256, dtype=torch.int64, device=device)
            remap[torch.tensor(self._object_ids, device=device)] = torch.arange(1, len(self._object_ids) + 1, device=device)
            dense = F.pad(remap[ids.clamp(0, 255)], (0, padded[1] - w, 0, padded[0] - h))
            probabilities = label_probabilities(dense[None], len(self._object_ids))
        else:
            logits = self.model.segment(low, embs, self._reference, self._previous, padded, chunk=self.config.chunk)
            probabilities = torch.softmax(logits.float(), dim=1)
        state = self.model.describe(embs, probabilities)
        if self._reference is None:
            self._reference = state
        self._previous = state
        return probabilities[0, :, :h, :w].float()


CORES.register("cfbi")(head_core(CFBIInferenceCore))
CORES.register("cfbi_plus")(head_core(CFBIInferenceCore))  # the same state: first + previous frame at every scale
ONLINE_LOSSES.register("cfbi")(segmentation_online_loss)
ONLINE_LOSSES.register("cfbi_plus")(segmentation_online_loss)
