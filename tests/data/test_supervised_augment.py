"""SupervisedAugment: integer ids resampled nearest (never clamped or blended), void kept, padding 0, masks
follow the frames, one geometry per clip, colour on frames only; ClipAugment itself is unchanged."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from selfvos.data.augment import ClipAugment, ClipAugmentConfig, SupervisedAugment

torch.set_num_threads(2)
ALWAYS = ClipAugmentConfig(crop_p=1.0, affine_p=1.0, hflip_p=0.5, jitter_p=1.0)
NO_COLOUR = ClipAugmentConfig(crop_p=1.0, affine_p=1.0, hflip_p=0.5, jitter_p=0.0)
PALETTE = {3: (1.0, 0.0, 0.0), 9: (0.0, 1.0, 0.0), 254: (0.0, 0.0, 1.0)}


def id_clip(batch: int = 3, frames: int = 3, h: int = 48, w: int = 64) -> tuple:
    """Grey frames with three coloured rectangles (ids 3, 9, 254) and a void band: (B, T, 3, H, W), (B, T, H, W)."""
    x = torch.full((batch, frames, 3, h, w), 0.5)
    m = torch.zeros(batch, frames, h, w, dtype=torch.int64)
    boxes = {3: (6, 22, 6, 28), 9: (8, 30, 34, 56), 254: (28, 44, 10, 40)}
    for b in range(batch):
        for t in range(frames):
            for k, (y0, y1, x0, x1) in boxes.items():
                s = 2 * t + b
                x[b, t, :, y0:y1, x0 + s:x1 + s] = torch.tensor(PALETTE[k])[:, None, None]
                m[b, t, y0:y1, x0 + s:x1 + s] = k
            m[b, t, -3:] = 255  # void band
    return x, m


def interior(ids: np.ndarray) -> np.ndarray:
    """Pixels whose 5x5 neighbourhood has a single id (away from every edge, incl. the image border): the
    crop enlarges up to ~1.4x, so bilinear frames blend colours over ~2 px at edges."""
    k = np.ones((5, 5), np.uint8)
    lo, hi = cv2.erode(ids.astype(np.uint8), k), cv2.dilate(ids.astype(np.uint8), k)
    inside = lo == hi
    inside[:2] = inside[-2:] = inside[:, :2] = inside[:, -2:] = False
    return inside


def test_ids_are_resampled_nearest_and_never_clamped():
    torch.manual_seed(0)
    x, m = id_clip()
    out = SupervisedAugment(ALWAYS)({"frames": x, "masks": m, "num_objects": torch.tensor([3, 3, 3])})
    assert out["masks"].dtype == torch.int64 and out["masks"].shape == m.shape and out["frames"].shape == x.shape
    assert set(out["masks"].unique().tolist()) <= {0, 3, 9, 254, 255}
    assert {3, 9, 254, 255} <= set(out["masks"].unique().tolist())
    assert out["num_objects"] is not None and torch.equal(out["num_objects"], torch.tensor([3, 3, 3]))
    assert (out["masks"] != m).float().mean() > 0.01  # the geometry did change
    assert 0 <= out["frames"].min() and out["frames"].max() <= 1


def test_masks_follow_the_frames_geometry():
    torch.manual_seed(1)
    x, m = id_clip(batch=4)
    out = SupervisedAugment(NO_COLOUR)({"frames": x, "masks": m})
    frames, masks = out["frames"].numpy(), out["masks"].numpy()
    checked = 0
    for b in range(4):
        for t in range(3):
            ids = masks[b, t]
            inside = interior(ids)
            for k, colour in PALETTE.items():
                sel = inside & (ids == k)
                checked += int(sel.sum())
                error = np.abs(frames[b, t][:, sel] - np.array(colour)[:, None]).max()
                assert error < 0.02, (b, t, k, error)  # masks shifted by 1 px give > 0.06
            bg = inside & (ids == 0)
            # background pixels are grey (the scene) or black (padding of the geometry): never an object colour
            assert (frames[b, t][:, bg].std(axis=0) < 0.05).all()
    assert checked > 1000


def test_padding_is_background_and_void_stays_void():
    torch.manual_seed(2)
    x = torch.rand(2, 2, 3, 40, 40)
    m = torch.full((2, 2, 40, 40), 255, dtype=torch.int64)  # all void
    out = SupervisedAugment(ClipAugmentConfig(crop_p=0.0, affine_p=1.0, degrees=40.0, jitter_p=0.0))(
        {"frames": x, "masks": m})
    values = set(out["masks"].unique().tolist())
    assert values == {0, 255}  # rotation corners are padding = background, the rest stays void


def test_one_geometry_per_clip_single_item_and_uint8_masks():
    torch.manual_seed(3)
    x, m = id_clip(batch=1, frames=1)
    x, m = x[0].repeat(4, 1, 1, 1), m[0].repeat(4, 1, 1).to(torch.uint8)  # one item: 4 identical frames
    out = SupervisedAugment(ALWAYS)({"frames": x, "masks": m})
    assert out["frames"].shape == (4, 3, 48, 64) and out["masks"].dtype == torch.uint8
    assert torch.allclose(out["frames"], out["frames"][:1].expand_as(out["frames"]), atol=1e-6)
    assert torch.equal(out["masks"], out["masks"][:1].expand_as(out["masks"]))


def test_bilinear_and_float_masks_are_rejected_and_clip_augment_is_unchanged():
    with pytest.raises(ValueError, match="bilinear"):
        SupervisedAugment(ClipAugmentConfig(mask_resample="bilinear"))
    x, m = id_clip(batch=1)
    with pytest.raises(TypeError, match="integer object ids"):
        SupervisedAugment()({"frames": x, "masks": m.float()})
    soft = (m > 0).float().unsqueeze(2) * 0.8  # ClipAugment still blends soft pseudo-masks bilinearly
    torch.manual_seed(4)
    out = ClipAugment(ALWAYS)({"frames": x, "pseudo_masks": soft})["pseudo_masks"]
    assert ((out > 0.01) & (out < 0.79)).any() and out.max() <= 0.8 + 1e-5
