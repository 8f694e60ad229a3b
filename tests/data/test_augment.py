"""ClipAugment: masks follow the frames, one geometry per clip, hard masks stay binary, refs, items."""
from __future__ import annotations

import pytest
import torch

from selfvos.data.augment import ClipAugment, ClipAugmentConfig

torch.set_num_threads(2)
ALWAYS = ClipAugmentConfig(crop_p=1.0, affine_p=1.0, hflip_p=0.5, jitter_p=1.0)


def red_square_clip(batch: int = 3, frames: int = 4, size: int = 64) -> tuple:
    """Grey frames with a red square moving right; mask = the square. (B, T, 3, H, W), (B, T, 1, H, W)."""
    x = torch.full((batch, frames, 3, size, size), 0.5)
    m = torch.zeros(batch, frames, 1, size, size)
    for b in range(batch):
        for t in range(frames):
            y0, x0 = 12 + 3 * b, 10 + 4 * t
            x[b, t, :, y0 : y0 + 24, x0 : x0 + 20] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
            m[b, t, 0, y0 : y0 + 24, x0 : x0 + 20] = 1.0
    return x, m


def chroma(frames: torch.Tensor) -> torch.Tensor:
    """max - min over RGB: high on the (jittered) red square, ~0 on grey and on black padding."""
    return frames.amax(dim=-3, keepdim=True) - frames.amin(dim=-3, keepdim=True)


def test_mask_still_matches_the_augmented_frame():
    torch.manual_seed(0)
    x, m = red_square_clip()
    out = ClipAugment(ALWAYS)({"frames": x, "pseudo_masks": m})
    c = chroma(out["frames"])
    drawn = c > 0.5 * c.amax(dim=(-1, -2, -3), keepdim=True)  # half-way between grey and the jittered red
    mask = out["pseudo_masks"] > 0.5
    iou = (drawn & mask).sum((-1, -2, -3)) / (drawn | mask).sum((-1, -2, -3)).clamp(min=1)
    assert out["frames"].shape == x.shape and out["pseudo_masks"].shape == m.shape
    assert mask.sum() > 0
    assert iou.min() > 0.9, iou  # worst of 30 seeds: 0.905; a 1-px shift of the mask gives ~0.8
    # and the augmentation actually changed the geometry
    assert (mask != (m > 0.5)).float().mean() > 0.01


def test_all_frames_of_a_clip_share_geometry_and_colour():
    torch.manual_seed(1)
    x, m = red_square_clip(batch=4, frames=1)
    x, m = x.repeat(1, 5, 1, 1, 1), m.repeat(1, 5, 1, 1, 1)  # a static clip of 5 identical frames
    out = ClipAugment(ALWAYS)({"frames": x, "pseudo_masks": m})
    f, pm = out["frames"], out["pseudo_masks"]
    assert torch.allclose(f, f[:, :1].expand_as(f), atol=1e-6)
    assert torch.equal(pm, pm[:, :1].expand_as(pm))
    assert not torch.allclose(f[0], f[1], atol=1e-3)  # different clips get different draws


def test_hard_masks_stay_binary_soft_masks_bilinear():
    torch.manual_seed(2)
    x, m = red_square_clip(batch=2)
    hard = ClipAugment(ALWAYS)({"frames": x, "pseudo_masks": m})["pseudo_masks"]
    assert set(hard.unique().tolist()) <= {0.0, 1.0}
    soft_in = m * 0.8
    soft = ClipAugment(ALWAYS)({"frames": x, "pseudo_masks": soft_in})["pseudo_masks"]
    values = soft.unique()
    assert ((values > 0.01) & (values < 0.79)).any()  # interpolated edge values appear
    assert soft.min() >= 0 and soft.max() <= 0.8 + 1e-5
    nearest = ClipAugment(ClipAugmentConfig(crop_p=1.0, affine_p=1.0, mask_resample="nearest"))
    kept = nearest({"frames": x, "pseudo_masks": soft_in})["pseudo_masks"].unique()
    assert torch.isin(kept, soft_in.unique()).all()  # nearest only copies input values


def test_refs_share_the_clip_geometry_or_get_their_own():
    torch.manual_seed(3)
    x, m = red_square_clip(batch=2, frames=3)
    batch = {"frames": x, "pseudo_masks": m, "refs": x[:, :2].clone(), "ref_masks": m[:, :2].clone(),
             "mask_valid": torch.ones(2, 3, dtype=torch.bool)}
    shared = ClipAugment(ALWAYS)(batch)
    assert torch.equal(shared["frames"][:, :2], shared["refs"])
    assert torch.equal(shared["pseudo_masks"][:, :2], shared["ref_masks"])
    assert shared["mask_valid"] is batch["mask_valid"]
    own = ClipAugment(ClipAugmentConfig(crop_p=1.0, affine_p=1.0, refs_share_geometry=False))(batch)
    assert not torch.allclose(own["frames"][:, :2], own["refs"], atol=1e-3)


def test_single_item_without_batch_dim_and_empty_refs():
    x, m = red_square_clip(batch=1)
    item = {"frames": x[0], "pseudo_masks": m[0], "refs": torch.zeros(0, 3, 64, 64), "ref_masks": torch.zeros(0, 1, 64, 64)}
    out = ClipAugment(ALWAYS)(item)
    assert out["frames"].shape == (4, 3, 64, 64) and out["pseudo_masks"].shape == (4, 1, 64, 64)
    assert out["refs"].shape == (0, 3, 64, 64)
    assert 0.0 <= out["frames"].min() and out["frames"].max() <= 1.0


def test_close_up_track_frames_get_their_own_draw_and_leave_the_clip_unchanged():
    frames, masks = red_square_clip()
    batch = {"frames": frames, "pseudo_masks": masks}
    aug = ClipAugment(ALWAYS)
    torch.manual_seed(3)
    plain = aug(batch)
    torch.manual_seed(3)
    split = aug({**batch, "track_frames": frames.clone()})
    assert torch.equal(split["frames"], plain["frames"]) and torch.equal(split["pseudo_masks"], plain["pseudo_masks"])
    assert split["track_frames"].shape == frames.shape
    assert not torch.allclose(split["track_frames"], split["frames"])  # a draw of its own
    assert "track_frames" not in plain


def test_bad_mask_resample_is_rejected():
    with pytest.raises(ValueError, match="mask_resample"):
        ClipAugmentConfig(mask_resample="cubic")
