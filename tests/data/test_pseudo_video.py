"""PseudoVideoDataset: T warped copies of one annotated frame, masks follow each warp, the item contract,
seeding, and the warp helpers."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from selfvos.data.augment import SupervisedAugment
from selfvos.data.pseudo_video import PseudoVideoConfig, PseudoVideoDataset, random_affine, resize_matrix, warp_pair
from selfvos.data.supervised import SupervisedClipConfig, collate_objects
from selfvos.data.video import VOID, InMemoryVideo, VideoCollection, VideoSample

torch.set_num_threads(2)
H, W = 60, 80
RECT = (18, 42, 24, 56)  # y0, y1, x0, x1 of the white object (id 3)


def rect_image_video(n: int = 6, annotated=(2, 4)) -> InMemoryVideo:
    """Grey frames with a near-white rectangle (id 3) and a small blue square (id 8); frame t's green channel
    is raised by t so frames differ; only ``annotated`` frames carry masks."""
    frames = np.full((n, H, W, 3), 90, np.uint8)
    masks = np.zeros((n, H, W), np.uint8)
    y0, y1, x0, x1 = RECT
    frames[:, y0:y1, x0:x1] = 240
    masks[:, y0:y1, x0:x1] = 3
    frames[:, 4:12, 4:12] = (0, 0, 255)
    masks[:, 4:12, 4:12] = 8
    frames[:, :, :, 1] += np.arange(n, dtype=np.uint8)[:, None, None]
    masks[:, -2:] = VOID
    ann = np.array([t in annotated for t in range(n)])
    return InMemoryVideo(VideoSample(frames, [f"{t:05d}" for t in range(n)], "still", masks=masks, annotated=ann))


def edge_band(ids: np.ndarray, radius: int = 1) -> np.ndarray:
    """Pixels within ``radius`` px of a boundary between different ids."""
    k = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    return cv2.dilate(ids.astype(np.uint8), k) != cv2.erode(ids.astype(np.uint8), k)


def test_config_defaults_and_validation():
    c = PseudoVideoConfig()
    assert (c.degrees, c.scale, c.translate, c.shear, c.border) == (15.0, (0.9, 1.1), 0.1, 10.0, "constant")
    for bad, field in [(dict(degrees=-1), "degrees"), (dict(scale=(1.2, 0.9)), "scale"),
                       (dict(translate=2), "translate"), (dict(shear=95), "shear"), (dict(border="wrap"), "border")]:
        with pytest.raises(ValueError, match=field):
            PseudoVideoConfig(**bad)


def test_warp_pair_mask_matches_the_warped_rectangle_within_one_pixel():
    frame = np.full((H, W, 3), 90, np.uint8)
    mask = np.zeros((H, W), np.uint8)
    y0, y1, x0, x1 = RECT
    frame[y0:y1, x0:x1], mask[y0:y1, x0:x1] = 255, 3
    rng = np.random.default_rng(0)
    for _ in range(20):
        matrix = random_affine(rng, PseudoVideoConfig(degrees=30, shear=15, translate=0.15), (H, W))
        out_frame, out_mask = warp_pair(frame, mask, matrix, (H, W))
        corners = np.array([[x0 - 0.5, y0 - 0.5, 1], [x1 - 0.5, y0 - 0.5, 1], [x1 - 0.5, y1 - 0.5, 1],
                            [x0 - 0.5, y1 - 0.5, 1]]) @ matrix.T  # pixel-edge corners of the rectangle
        expected = np.zeros((H, W), np.uint8)
        cv2.fillPoly(expected, [np.round(corners[:, :2] * 16).astype(np.int32)], 3, shift=4)
        ids = out_mask.numpy()
        assert set(np.unique(ids).tolist()) <= {0, 3}
        wrong = ids != expected
        assert not (wrong & ~edge_band(expected)).any()  # differences only within 1 px of the true edges
        bright = out_frame.numpy().min(axis=0) > (90 + 255) / 2 / 255
        assert not ((bright != (ids == 3)) & ~edge_band(ids)).any()


def test_identity_warp_is_the_resize():
    video = rect_image_video()
    frame, mask = video.frame(2), video.mask(2)
    identity = PseudoVideoConfig(degrees=0, scale=(1.0, 1.0), translate=0, shear=0)
    m = random_affine(np.random.default_rng(0), identity, (H, W))
    f, ids = warp_pair(frame, mask, m, (H, W))
    assert torch.allclose(f, torch.from_numpy(frame).permute(2, 0, 1) / 255.0)
    assert torch.equal(ids, torch.from_numpy(mask).long())
    f, _ = warp_pair(frame, mask, m @ resize_matrix((H, W), (30, 40)), (30, 40))
    half = cv2.resize(frame, (40, 30), interpolation=cv2.INTER_LINEAR)
    assert torch.allclose(f, torch.from_numpy(half).permute(2, 0, 1) / 255.0, atol=0.01)


def test_items_are_independent_warps_of_one_annotated_frame():
    video = rect_image_video()
    cfg = SupervisedClipConfig(num_frames=4, size=(H, W), max_objects=3, min_pixels=4, seed=1)
    ds = PseudoVideoDataset(VideoCollection([video]), cfg, clips_per_video=8)
    chosen = set()
    for index in range(len(ds)):
        item = ds[index]
        assert {k: (tuple(v.shape), v.dtype) for k, v in item.items()} == {
            "frames": ((4, 3, H, W), torch.float32), "masks": ((4, H, W), torch.int64),
            "num_objects": ((), torch.int64), "video_index": ((), torch.int64), "frame_indices": ((4,), torch.int64)}
        picks = item["frame_indices"].tolist()
        assert len(set(picks)) == 1 and picks[0] in (2, 4)
        chosen.add(picks[0])
        frames, masks = item["frames"], item["masks"]
        assert all(not torch.allclose(frames[a], frames[b]) for a in range(4) for b in range(a + 1, 4))
        assert all(not torch.equal(masks[a], masks[b]) for a in range(4) for b in range(a + 1, 4))
        k = int(item["num_objects"])
        assert set(masks[0].unique().tolist()) - {0, VOID} == set(range(1, k + 1))
        assert set(masks.unique().tolist()) <= set(range(k + 1)) | {VOID}
        assert (masks[0] == 1).sum() > 300  # ids 3 (white) and 8 (blue) -> 1 and 2; the white one always stays
        for t in range(4):  # the white rectangle's mask follows its warp, within 1 px of the edges
            bright = frames[t].min(dim=0).values.numpy() > 0.7
            ids = masks[t].numpy()
            assert not ((bright != (ids == 1)) & ~edge_band(ids)).any()
    assert chosen == {2, 4}


def test_also_importable_from_the_supervised_module():
    from selfvos.data import supervised

    assert supervised.PseudoVideoDataset is PseudoVideoDataset and supervised.PseudoVideoConfig is PseudoVideoConfig


def test_seeding_augmentation_and_collate():
    coll = VideoCollection([rect_image_video()])
    cfg = SupervisedClipConfig(num_frames=3, size=(H, W), max_objects=1, min_pixels=4, seed=4)
    ds = PseudoVideoDataset(coll, cfg, augment=SupervisedAugment(), clips_per_video=3,
                            affine=PseudoVideoConfig(degrees=5, border="reflect"))
    a, b = ds[1], PseudoVideoDataset(coll, cfg, augment=SupervisedAugment(), clips_per_video=3,
                                     affine=PseudoVideoConfig(degrees=5, border="reflect"))[1]
    assert all(torch.equal(a[k], b[k]) for k in a)
    ds.set_epoch(1)
    assert not torch.equal(a["frames"], ds[1]["frames"])
    batch = collate_objects([ds[i] for i in range(3)])
    assert batch["object_valid"].tolist() == [[True]] * 3 and batch["masks"].max() <= VOID
