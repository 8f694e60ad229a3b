"""ClipDataset: the batch contract, skip rules, references, masks, determinism, curriculum, workers."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from selfvos.data.augment import ClipAugment
from selfvos.data.sampling import (
    ClipDataset,
    ClipSamplerConfig,
    SkipCurriculum,
    sample_clip_indices,
    sample_reference_indices,
)
from selfvos.data.synthetic import SyntheticConfig, synthetic_collection
from selfvos.data.video import VOID, InMemoryVideo, VideoCollection, VideoSample

torch.set_num_threads(2)
COLL = synthetic_collection(SyntheticConfig(num_videos=3, num_frames=30, height=48, width=64, seed=5))
CFG = ClipSamplerConfig(num_frames=4, max_skip=3, num_refs=2, size=(32, 40), seed=9)


def test_collated_batch_follows_the_contract():
    batch = next(iter(DataLoader(ClipDataset(COLL, CFG, clips_per_video=2), batch_size=3)))
    expect = {
        "frames": ((3, 4, 3, 32, 40), torch.float32), "pseudo_masks": ((3, 4, 1, 32, 40), torch.float32),
        "mask_valid": ((3, 4), torch.bool), "refs": ((3, 2, 3, 32, 40), torch.float32),
        "ref_masks": ((3, 2, 1, 32, 40), torch.float32), "ref_valid": ((3, 2), torch.bool),
        "video_index": ((3,), torch.int64), "frame_indices": ((3, 4), torch.int64), "ref_indices": ((3, 2), torch.int64),
    }
    assert {k: (tuple(v.shape), v.dtype) for k, v in batch.items()} == expect
    assert batch["frames"].min() >= 0 and batch["frames"].max() <= 1
    assert batch["mask_valid"].all() and batch["ref_valid"].all()
    assert batch["video_index"].tolist() == [0, 1, 2]


def test_clip_steps_and_references():
    rng = np.random.default_rng(0)
    steps_seen = set()
    for _ in range(300):
        clip = sample_clip_indices(rng, 40, 5, 4)
        steps = np.diff(clip)
        assert clip.min() >= 0 and clip.max() <= 39 and steps.min() >= 1 and steps.max() <= 4
        steps_seen |= set(steps.tolist())
        refs = sample_reference_indices(rng, 40, clip, 3)
        assert len(set(refs.tolist())) == 3 and not set(refs.tolist()) & set(clip.tolist())
    assert steps_seen == {1, 2, 3, 4}
    assert sample_clip_indices(rng, 6, 4, 25).max() <= 5  # long skips shrink to fit
    assert sample_clip_indices(rng, 2, 4, 3).tolist() == [0, 1, 1, 1]  # short video: clamped at the end
    assert len(sample_reference_indices(rng, 4, [0, 1, 2, 3], 2)) == 2  # no frame left outside: reuse


def test_frames_and_masks_are_the_resized_video():
    ds = ClipDataset(COLL, CFG)
    item = ds[1]
    video = COLL[1]
    for k, i in enumerate(item["frame_indices"].tolist()):
        frame = cv2.resize(video.frame(i), (40, 32), interpolation=cv2.INTER_LINEAR)
        assert torch.allclose(item["frames"][k], torch.from_numpy(frame).permute(2, 0, 1) / 255.0)
        fg = cv2.resize((video.mask(i) > 0).astype(np.float32), (40, 32), interpolation=cv2.INTER_NEAREST)
        assert torch.equal(item["pseudo_masks"][k, 0], torch.from_numpy(fg))


def window_corner(crops: torch.Tensor, big: list) -> tuple:
    """(y, x) of the one 32x40 window that every crop (K, 3, 32, 40) cuts from its 48x64 frame in ``big``."""
    def as_tensor(frame, y, x):
        return torch.from_numpy(frame[y:y + 32, x:x + 40]).permute(2, 0, 1) / 255.0

    found = [(y, x) for y in range(17) for x in range(25) if torch.allclose(crops[0], as_tensor(big[0], y, x))]
    assert len(found) >= 1 and len(crops) == len(big)
    y, x = found[0]
    for crop, frame in zip(crops, big):
        assert torch.allclose(crop, as_tensor(frame, y, x))
    return y, x


def test_crop_from_cuts_one_window_of_the_larger_resized_frame_for_frames_refs_and_masks():
    cfg = ClipSamplerConfig(num_frames=4, max_skip=3, num_refs=2, size=(32, 40), seed=9, crop_from=(48, 64))
    assert cfg.frame_size == (48, 64) and CFG.frame_size == (32, 40)
    ds = ClipDataset(COLL, cfg, clips_per_video=4)
    corners = set()
    for index in range(8):
        item = ds[index]
        video = COLL[int(item["video_index"])]
        big = [cv2.resize(video.frame(i), (64, 48), interpolation=cv2.INTER_LINEAR)
               for i in item["frame_indices"].tolist() + item["ref_indices"].tolist()]
        crops = torch.cat([item["frames"], item["refs"]])
        assert crops.shape == (6, 3, 32, 40)
        y, x = window_corner(crops, big)  # the same window in every frame and reference
        corners.add((y, x))
        for k, i in enumerate(item["frame_indices"].tolist()):
            fg = cv2.resize((video.mask(i) > 0).astype(np.float32), (64, 48), interpolation=cv2.INTER_NEAREST)
            assert torch.equal(item["pseudo_masks"][k, 0], torch.from_numpy(fg[y:y + 32, x:x + 40]))
    assert len(corners) > 1  # the window moves from item to item
    assert torch.equal(ds[3]["frames"], ClipDataset(COLL, cfg, clips_per_video=4)[3]["frames"])  # seeded
    with pytest.raises(ValueError, match="crop_from"):
        ClipSamplerConfig(size=(32, 40), crop_from=(30, 64))


def test_crop_p_mixes_windows_and_whole_frames():
    whole = ClipDataset(COLL, CFG, clips_per_video=10)
    mixed = ClipDataset(COLL, ClipSamplerConfig(num_frames=4, max_skip=3, num_refs=2, size=(32, 40), seed=9,
                                                crop_from=(48, 64), crop_p=0.5), clips_per_video=10)
    kinds = []
    for index in range(30):
        item = mixed[index]
        video = COLL[int(item["video_index"])]
        first = cv2.resize(video.frame(int(item["frame_indices"][0])), (40, 32), interpolation=cv2.INTER_LINEAR)
        kinds.append(torch.allclose(item["frames"][0], torch.from_numpy(first).permute(2, 0, 1) / 255.0))
    assert 5 < sum(kinds) < 25  # about half are whole frames at size, the rest windows
    assert torch.equal(whole[0]["frames"], ClipDataset(COLL, CFG, clips_per_video=10)[0]["frames"])
    with pytest.raises(ValueError, match="crop_p"):
        ClipSamplerConfig(size=(32, 40), crop_from=(48, 64), crop_p=1.5)


def test_split_view_keeps_whole_frames_and_adds_a_close_up_of_the_clip_for_tracking():
    split = ClipSamplerConfig(num_frames=4, max_skip=3, num_refs=2, size=(32, 40), seed=9, crop_from=(48, 64),
                              crop_views="tracking")
    assert split.frame_size == (32, 40)  # the frame head (and the relabel) stays at the whole-frame scale
    whole, ds = ClipDataset(COLL, CFG, clips_per_video=4), ClipDataset(COLL, split, clips_per_video=4)
    corners = set()
    for index in range(8):
        item, reference = ds[index], whole[index]
        for key in reference:  # the whole-frame view is exactly the item without the split view
            assert torch.equal(item[key], reference[key]), key
        video = COLL[int(item["video_index"])]
        big = [cv2.resize(video.frame(i), (64, 48), interpolation=cv2.INTER_LINEAR) for i in item["frame_indices"].tolist()]
        close_up = item["track_frames"]
        assert close_up.shape == (4, 3, 32, 40)
        corners.add(window_corner(close_up, big))  # one window for every frame of the clip
    assert len(corners) > 1
    with pytest.raises(ValueError, match="crop_views"):
        ClipSamplerConfig(size=(32, 40), crop_from=(48, 64), crop_views="refs")
    with pytest.raises(ValueError, match="needs crop_from"):
        ClipSamplerConfig(size=(32, 40), crop_views="tracking")


def test_void_is_not_foreground_and_unannotated_videos_are_invalid():
    frames = np.zeros((5, 8, 8, 3), np.uint8)
    masks = np.zeros((5, 8, 8), np.uint8)
    masks[:, :4] = 1
    masks[:, :2] = VOID
    annotated = np.array([True, False, True, False, True])
    with_masks = InMemoryVideo(VideoSample(frames, [str(i) for i in range(5)], "a", masks=masks, annotated=annotated))
    without = InMemoryVideo(VideoSample(frames, [str(i) for i in range(5)], "b"))
    cfg = ClipSamplerConfig(num_frames=5, max_skip=1, num_refs=0, size=(8, 8))
    item = ClipDataset(VideoCollection([with_masks, without]), cfg)[0]
    assert item["mask_valid"].tolist() == annotated.tolist()
    assert item["pseudo_masks"][0, 0, :2].sum() == 0 and item["pseudo_masks"][0, 0, 2:4].min() == 1
    assert item["pseudo_masks"][1].sum() == 0 and item["refs"].shape == (0, 3, 8, 8)
    other = ClipDataset(VideoCollection([with_masks, without]), cfg)[1]
    assert not other["mask_valid"].any() and other["pseudo_masks"].sum() == 0


def test_mask_provider_soft_masks_resized_bilinear():
    def provider(name: str, index: int):
        if index % 2:
            return None
        return np.tile(np.linspace(0.0, 1.0, 64, dtype=np.float32), (48, 1))

    item = ClipDataset(COLL, ClipSamplerConfig(num_frames=6, max_skip=1, num_refs=3, size=(24, 32)), provider)[0]
    even = (item["frame_indices"] % 2 == 0)
    assert torch.equal(item["mask_valid"], even) and torch.equal(item["ref_valid"], item["ref_indices"] % 2 == 0)
    expected = cv2.resize(provider("", 0), (32, 24), interpolation=cv2.INTER_LINEAR)
    k = int(torch.nonzero(even)[0])
    assert torch.allclose(item["pseudo_masks"][k, 0], torch.from_numpy(expected))
    assert item["pseudo_masks"][~even].sum() == 0


def test_items_are_reproducible_per_seed_epoch_index():
    ds, again = ClipDataset(COLL, CFG, augment=ClipAugment()), ClipDataset(COLL, CFG, augment=ClipAugment())
    state = torch.random.get_rng_state()
    a, b = ds[2], again[2]
    assert torch.equal(torch.random.get_rng_state(), state)  # augmentation does not touch the global RNG
    assert all(torch.equal(a[k], b[k]) for k in a)
    ds.set_epoch(1)
    c = ds[2]
    assert not torch.equal(a["frames"], c["frames"])
    base = ClipDataset(COLL, CFG)[2]
    other = ClipDataset(COLL, ClipSamplerConfig(num_frames=4, max_skip=3, num_refs=2, size=(32, 40), seed=10))[2]
    picks = lambda item: torch.cat([item["frame_indices"], item["ref_indices"]])  # noqa: E731
    assert torch.equal(picks(base), picks(a)) and not torch.equal(picks(base), picks(other))


def test_skip_curriculum_grows_linearly_and_drives_the_dataset():
    cur = SkipCurriculum(start=1, end=25, steps=100)
    assert [cur(s) for s in (0, 25, 50, 100, 500)] == [1, 7, 13, 25, 25]
    ds = ClipDataset(COLL, ClipSamplerConfig(num_frames=5, max_skip=10, num_refs=0, size=(16, 16)), clips_per_video=20)
    assert cur.apply(ds, 0) == 1 and ds.max_skip == 1
    assert all(np.diff(ds[i]["frame_indices"].numpy()).tolist() == [1, 1, 1, 1] for i in range(10))
    cur.apply(ds, 50)
    assert max(int(np.diff(ds[i]["frame_indices"].numpy()).max()) for i in range(30)) > 1
    with pytest.raises(ValueError):
        ds.max_skip = 0


def test_persistent_workers_see_epoch_and_max_skip_updates():
    ds = ClipDataset(COLL, ClipSamplerConfig(num_frames=4, max_skip=8, num_refs=0, size=(16, 16)), clips_per_video=2)
    loader = DataLoader(ds, batch_size=6, num_workers=1, persistent_workers=True)
    first = next(iter(loader))["frame_indices"]
    ds.max_skip = 1
    ds.set_epoch(3)
    second = next(iter(loader))["frame_indices"]
    assert (second.diff(dim=1) == 1).all() and not torch.equal(first, second)
    assert torch.equal(second, torch.stack([ds[i]["frame_indices"] for i in range(6)]))


def test_real_davis_clip_foreground_matches_the_annotation():
    from tests.conftest import shared_path
    from selfvos.data.sources import open_source

    coll = open_source(str(shared_path("davis2016-train-240p"))).select(["bear", "boat"])
    ds = ClipDataset(coll, ClipSamplerConfig(num_frames=3, max_skip=5, num_refs=2, size=(120, 214), seed=1))
    for index in range(len(ds)):
        item = ds[index]
        video = coll[int(item["video_index"])]
        assert item["mask_valid"].all() and item["ref_valid"].all()
        for k, i in enumerate(item["frame_indices"].tolist()):
            gt = cv2.resize((video.mask(i) > 0).astype(np.float32), (214, 120), interpolation=cv2.INTER_NEAREST)
            assert torch.equal(item["pseudo_masks"][k, 0], torch.from_numpy(gt))
            assert 0.01 < float(item["pseudo_masks"][k].mean()) < 0.6  # an object, not an empty or full mask
