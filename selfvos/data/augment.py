"""Clip augmentation with kornia: one geometry per clip for frames and masks, colour jitter on frames only.

``AugmentationSequential(VideoSequential(...), data_keys=["input", "mask"])`` draws one random resized crop,
affine and horizontal flip per clip (``same_on_frame=True``) and applies it to every frame of the clip and to
its masks; the colour jitter (also one draw per clip) is an intensity op, which kornia applies to the
``"input"`` frames only. Hard masks (values in {0, 1}) are resampled nearest, so they stay binary; soft
pseudo-masks are resampled bilinearly (``mask_resample``). The output keeps the input size.

Works on a collated batch ``(B, T, 3, H, W)`` (on any device) or on one :class:`ClipDataset` item
``(T, 3, H, W)``. With ``refs_share_geometry`` the reference frames are augmented as extra frames of the
same clip (same crop, flip and colours as the clip); otherwise they get their own draw. The close-up
``track_frames`` of the split view (``ClipSamplerConfig.crop_views="tracking"``) are a view of their own and
always get their own draw.

:class:`SupervisedAugment` is the id-safe variant for the supervised items of :mod:`selfvos.data.supervised`:
the same kornia pipeline (one geometry per clip, colour jitter on frames only), with ``"masks"`` int (T, H, W)
object ids always resampled NEAREST as integers (never clamped, never bilinear): void stays 255 and the
padding the geometry introduces is 0 (background).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import nn

import kornia.augmentation as K
from kornia.constants import DataKey, Resample

_MASK_RESAMPLE = {"nearest": Resample.NEAREST, "bilinear": Resample.BILINEAR}


@dataclass
class ClipAugmentConfig:
    """Probabilities and ranges of the clip augmentations (kornia conventions)."""

    crop_p: float = 0.5
    crop_scale: Tuple[float, float] = (0.5, 1.0)  # area fraction kept by the random resized crop
    crop_ratio: Tuple[float, float] = (0.75, 4.0 / 3.0)
    affine_p: float = 0.5
    degrees: float = 10.0
    translate: float = 0.1  # fraction of the side
    scale: Tuple[float, float] = (0.9, 1.1)
    shear: float = 5.0
    hflip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.03
    mask_resample: str = "auto"  # "nearest", "bilinear" or "auto" (nearest iff every mask value is 0 or 1)
    refs_share_geometry: bool = True

    def __post_init__(self) -> None:
        if self.mask_resample not in ("auto", *_MASK_RESAMPLE):
            raise ValueError(f"mask_resample must be 'auto', 'nearest' or 'bilinear', got {self.mask_resample!r}")


class ClipAugment(nn.Module):
    """Batch-contract augmentation: ``forward(batch) -> batch`` with ``frames``/``pseudo_masks``,
    ``refs``/``ref_masks`` and ``track_frames`` augmented; every other key is passed through unchanged."""

    def __init__(self, cfg: Optional[ClipAugmentConfig] = None) -> None:
        super().__init__()
        self.cfg = cfg or ClipAugmentConfig()
        self.pipelines = nn.ModuleDict()  # "HxW" -> [nearest-mask pipeline, bilinear-mask pipeline]

    def _pipelines(self, height: int, width: int) -> nn.ModuleList:
        key = f"{height}x{width}"
        if key not in self.pipelines:  # RandomResizedCrop needs the output size: one pipeline per input size
            c = self.cfg
            video = K.VideoSequential(
                K.RandomResizedCrop((height, width), scale=c.crop_scale, ratio=c.crop_ratio, p=c.crop_p),
                K.RandomAffine(c.degrees, translate=(c.translate, c.translate), scale=c.scale, shear=c.shear,
                               p=c.affine_p),
                K.RandomHorizontalFlip(p=c.hflip_p),
                K.ColorJitter(c.brightness, c.contrast, c.saturation, c.hue, p=c.jitter_p),
                data_format="BTCHW",
                same_on_frame=True,
            )
            self.pipelines[key] = nn.ModuleList([
                K.AugmentationSequential(video, data_keys=["input", "mask"], extra_args={
                    DataKey.MASK: {"resample": _MASK_RESAMPLE[kind], "align_corners": None if kind == "nearest" else False}
                })
                for kind in ("nearest", "bilinear")
            ])
        return self.pipelines[key]

    def augment_clip(self, frames: torch.Tensor, masks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """frames (B, T, 3, H, W) in [0, 1], masks (B, T, 1, H, W) in [0, 1] -> the same shapes, one geometry per clip."""
        if frames.shape[1] == 0:
            return frames, masks
        kind = self.cfg.mask_resample
        if kind == "auto":
            kind = "nearest" if bool(((masks == 0) | (masks == 1)).all()) else "bilinear"
        pipeline = self._pipelines(frames.shape[-2], frames.shape[-1])[0 if kind == "nearest" else 1]
        out_frames, out_masks = pipeline(frames, masks.to(frames.dtype))
        return out_frames.clamp_(0.0, 1.0), out_masks.clamp_(0.0, 1.0)

    @torch.no_grad()
    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        out = dict(batch)
        unbatched = batch["frames"].dim() == 4
        add = (lambda x: x.unsqueeze(0)) if unbatched else (lambda x: x)
        frames = add(batch["frames"])
        masks = add(batch["pseudo_masks"]) if "pseudo_masks" in batch else frames.new_zeros(frames[:, :, :1].shape)
        has_refs = "refs" in batch and batch["refs"].shape[-4] > 0
        refs = add(batch["refs"]) if has_refs else None
        ref_masks = None
        if refs is not None:
            ref_masks = add(batch["ref_masks"]) if "ref_masks" in batch else refs.new_zeros(refs[:, :, :1].shape)
        if refs is not None and self.cfg.refs_share_geometry:
            t = frames.shape[1]
            all_frames, all_masks = self.augment_clip(torch.cat([frames, refs], 1), torch.cat([masks, ref_masks], 1))
            frames, refs, masks, ref_masks = all_frames[:, :t], all_frames[:, t:], all_masks[:, :t], all_masks[:, t:]
        else:
            frames, masks = self.augment_clip(frames, masks)
            if refs is not None:
                refs, ref_masks = self.augment_clip(refs, ref_masks)
        drop = (lambda x: x.squeeze(0)) if unbatched else (lambda x: x)
        if "track_frames" in batch:  # drawn after the clip's: the whole-frame view's draws are unchanged
            close_up = add(batch["track_frames"])
            out["track_frames"] = drop(self.augment_clip(close_up, close_up.new_zeros(close_up[:, :, :1].shape))[0]).contiguous()
        out["frames"] = drop(frames).contiguous()
        if "pseudo_masks" in batch:
            out["pseudo_masks"] = drop(masks).contiguous()
        if refs is not None:
            out["refs"] = drop(refs).contiguous()
            if "ref_masks" in batch:
                out["ref_masks"] = drop(ref_masks).contiguous()
        return out


class SupervisedAugment(ClipAugment):
    """Id-safe clip augmentation: ``forward(item) -> item`` with ``"frames"`` float (T, 3, H, W) in [0, 1] and
    ``"masks"`` integer object ids (T, H, W) (or a batch (B, T, 3, H, W) / (B, T, H, W)); every other key is
    passed through. One random resized crop / affine / flip per clip for frames and masks, colour jitter on
    frames only; masks resampled NEAREST and returned with their input dtype, so every output id is an input
    id or 0 (padding). ``cfg.mask_resample`` must be ``"auto"`` or ``"nearest"`` (ids are labels)."""

    def __init__(self, cfg: Optional[ClipAugmentConfig] = None) -> None:
        cfg = cfg or ClipAugmentConfig()
        if cfg.mask_resample == "bilinear":
            raise ValueError("SupervisedAugment resamples id masks nearest; mask_resample='bilinear' is not allowed")
        super().__init__(cfg)

    def augment_ids(self, frames: torch.Tensor, masks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """frames (B, T, 3, H, W) in [0, 1], masks (B, T, H, W) integer ids -> the same shapes and dtypes,
        one geometry per clip (masks nearest, outside = 0)."""
        if frames.shape[1] == 0:
            return frames, masks
        if masks.dtype.is_floating_point or masks.dtype == torch.bool:
            raise TypeError(f"SupervisedAugment: masks must hold integer object ids, got {masks.dtype}")
        pipeline = self._pipelines(frames.shape[-2], frames.shape[-1])[0]  # the nearest-mask pipeline
        out_frames, out_masks = pipeline(frames, masks.unsqueeze(2).to(torch.float32))
        return out_frames.clamp_(0.0, 1.0), out_masks.squeeze(2).round_().to(masks.dtype)

    @torch.no_grad()
    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        out = dict(batch)
        unbatched = batch["frames"].dim() == 4
        frames, masks = batch["frames"], batch["masks"]
        if unbatched:
            frames, masks = frames.unsqueeze(0), masks.unsqueeze(0)
        frames, masks = self.augment_ids(frames, masks)
        if unbatched:
            frames, masks = frames.squeeze(0), masks.squeeze(0)
        out["frames"], out["masks"] = frames.contiguous(), masks.contiguous()
        return out
