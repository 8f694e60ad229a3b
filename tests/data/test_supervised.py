"""SupervisedClipDataset: the id-clip contract, object selection and renumbering, void, re-draws, seeding,
curriculum, collate_objects, and real DAVIS items (skipped without ../shared/data)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from selfvos.data.augment import ClipAugmentConfig, SupervisedAugment
from selfvos.data.sampling import SkipCurriculum
from selfvos.data.supervised import (
    SupervisedClipConfig,
    SupervisedClipDataset,
    collate_objects,
    resize_ids,
    select_objects,
)
from selfvos.data.video import VOID, InMemoryVideo, VideoCollection, VideoSample
from selfvos.errors import SelfvosInputError

torch.set_num_threads(2)
H, W = 48, 64
# id -> (y0, y1, x0, x1) at 48x64; sizes differ so each id is recognisable, gaps of >= 4 px between boxes
RECTS = {3: (4, 20, 4, 24), 7: (4, 16, 30, 44), 20: (24, 44, 4, 20), 41: (26, 40, 26, 40), 200: (22, 34, 46, 60)}
COLOURS = {3: (255, 0, 0), 7: (0, 255, 0), 20: (0, 0, 255), 41: (255, 255, 0), 200: (0, 255, 255)}
ALWAYS = ClipAugmentConfig(crop_p=1.0, affine_p=1.0, hflip_p=0.5, jitter_p=1.0)


def rect_video(name: str = "rects", n: int = 12, ids=tuple(RECTS), void: bool = True, annotated=None,
               late: dict = None, void_value: int = VOID) -> InMemoryVideo:
    """Grey frames with coloured rectangles moving 1 px right per frame; masks = the rectangles' ids,
    a void strip along the top row pair. ``late``: {id: first frame it appears in}."""
    frames = np.full((n, H, W, 3), 100, np.uint8)
    masks = np.zeros((n, H, W), np.uint8)
    for t in range(n):
        for k in ids:
            if late and t < late.get(k, 0):
                continue
            y0, y1, x0, x1 = RECTS[k]
            s = t % 3
            frames[t, y0:y1, x0 + s:x1 + s] = COLOURS[k]
            masks[t, y0:y1, x0 + s:x1 + s] = k
        if void:
            masks[t, :2] = void_value
    ann = None if annotated is None else np.array([t in annotated for t in range(n)])
    sample = VideoSample(frames, [f"{t:05d}" for t in range(n)], name, masks=masks, annotated=ann,
                         void_value=void_value)
    return InMemoryVideo(sample)


def originals(video: InMemoryVideo, item: dict, size) -> torch.Tensor:
    """The item's frames' original ids resized nearest to ``size``: int64 (T, H, W)."""
    return torch.stack([resize_ids(video.mask(int(i)), size, video.void_value) for i in item["frame_indices"]])


def test_config_is_validated_with_clear_messages():
    assert SupervisedClipConfig().size == (240, 432)
    for bad, field in [(dict(num_frames=0), "num_frames"), (dict(max_skip=0), "max_skip"), (dict(size=(0, 4)), "size"),
                       (dict(max_objects=0), "max_objects"), (dict(min_pixels=0), "min_pixels")]:
        with pytest.raises(ValueError, match=field):
            SupervisedClipConfig(**bad)


def test_item_contract_and_ids_preserved_through_resize_and_augmentation():
    coll = VideoCollection([rect_video()])
    cfg = SupervisedClipConfig(num_frames=4, max_skip=2, size=(40, 56), max_objects=5, min_pixels=4, seed=3)
    ds = SupervisedClipDataset(coll, cfg, augment=SupervisedAugment(ALWAYS), clips_per_video=12)
    ks = []
    for index in range(len(ds)):
        item = ds[index]
        assert {k: (tuple(v.shape), v.dtype) for k, v in item.items()} == {
            "frames": ((4, 3, 40, 56), torch.float32), "masks": ((4, 40, 56), torch.int64),
            "num_objects": ((), torch.int64), "video_index": ((), torch.int64), "frame_indices": ((4,), torch.int64)}
        k = int(item["num_objects"])
        assert 1 <= k <= 5
        assert set(item["masks"].unique().tolist()) <= set(range(k + 1)) | {VOID}
        first = set(item["masks"][0].unique().tolist()) - {0, VOID}
        assert first == set(range(1, k + 1))
        assert 0 <= item["frames"].min() and item["frames"].max() <= 1
        ks.append(k)
    assert max(ks) == 5 and min(ks) < 5  # crops push some objects out of the first frame: they are dropped


def test_without_augmentation_masks_are_the_renumbered_resized_ids():
    video = rect_video()
    cfg = SupervisedClipConfig(num_frames=3, max_skip=3, size=(24, 32), max_objects=5, min_pixels=1)
    item = SupervisedClipDataset(VideoCollection([video]), cfg)[0]
    orig = originals(video, item, (24, 32))
    kept = sorted(set(orig[0].unique().tolist()) - {0, VOID})
    assert int(item["num_objects"]) == len(kept) == 5
    expected = torch.zeros_like(orig)
    expected[orig == VOID] = VOID
    for j, k in enumerate(kept, start=1):
        expected[orig == k] = j
    assert torch.equal(item["masks"], expected)
    for k, i in enumerate(item["frame_indices"].tolist()):
        frame = cv2.resize(video.frame(i), (32, 24), interpolation=cv2.INTER_LINEAR)
        assert torch.allclose(item["frames"][k], torch.from_numpy(frame).permute(2, 0, 1) / 255.0)


def test_max_objects_keeps_a_seeded_subset_renumbered_in_id_order():
    video = rect_video()
    cfg = SupervisedClipConfig(num_frames=3, max_skip=2, size=(H, W), max_objects=2, min_pixels=1, seed=1)
    ds = SupervisedClipDataset(VideoCollection([video]), cfg, clips_per_video=20)
    subsets = set()
    for index in range(len(ds)):
        item = ds[index]
        orig = originals(video, item, (H, W))
        assert int(item["num_objects"]) == 2
        kept = []
        for j in (1, 2):  # every pixel of new id j has ONE original id, in increasing order
            under = orig[item["masks"] == j].unique().tolist()
            assert len(under) == 1
            kept.append(under[0])
            assert torch.equal(item["masks"] == j, orig == under[0])  # in every frame of the clip
        assert kept == sorted(kept)
        dropped = (orig > 0) & (orig != VOID) & ~torch.isin(orig, torch.tensor(kept))
        assert (item["masks"][dropped] == 0).all()
        subsets.add(tuple(kept))
    assert len(subsets) > 2  # the subset is random (seeded)


def test_objects_absent_or_too_small_in_the_first_frame_become_background():
    video = rect_video(late={41: 6})
    cfg = SupervisedClipConfig(num_frames=4, max_skip=1, size=(H, W), max_objects=5, min_pixels=200)
    ds = SupervisedClipDataset(VideoCollection([video]), cfg, clips_per_video=10)
    for index in range(len(ds)):
        item = ds[index]
        orig = originals(video, item, (H, W))
        big = [k for k in (3, 7, 20) if (orig[0] == k).sum() >= 200]  # 320, 168, 320 px: 7 is too small
        assert big == [3, 20] and int(item["num_objects"]) == 2
        assert (item["masks"][(orig == 7) | (orig == 41) | (orig == 200)] == 0).all()
        if item["frame_indices"][0] < 6 and (orig == 41).any():
            assert (item["masks"][orig == 41] == 0).all()  # appears later in the clip: not an object of it


def test_void_stays_255_and_is_never_an_object():
    video = rect_video(void_value=254)  # a reader with another void value: mapped to 255
    cfg = SupervisedClipConfig(num_frames=3, size=(H, W), max_objects=5, min_pixels=1)
    ds = SupervisedClipDataset(VideoCollection([video]), cfg, augment=SupervisedAugment(ClipAugmentConfig(
        crop_p=0.0, affine_p=0.0, hflip_p=1.0)), clips_per_video=3)
    for index in range(3):
        item = ds[index]
        assert (item["masks"][:, :2] == VOID).all() and (item["masks"][:, 2:] != VOID).all()
        assert int(item["num_objects"]) == 5


def test_only_annotated_frames_are_drawn_and_unannotated_videos_are_an_error():
    annotated = {0, 5, 10, 15, 20}
    video = rect_video("sparse", n=22, annotated=annotated)
    cfg = SupervisedClipConfig(num_frames=3, max_skip=1, size=(H, W), min_pixels=1)
    ds = SupervisedClipDataset(VideoCollection([video]), cfg, clips_per_video=10)
    for index in range(10):
        picks = ds[index]["frame_indices"].tolist()
        assert set(picks) <= annotated and all(b - a == 5 for a, b in zip(picks, picks[1:]))
    frames = np.zeros((4, 8, 8, 3), np.uint8)
    unlabeled = InMemoryVideo(VideoSample(frames, list("abcd"), "no-masks", source="/data/no-masks"))
    with pytest.raises(SelfvosInputError, match=r"/data/no-masks: video 'no-masks' has no annotated frame"):
        SupervisedClipDataset(VideoCollection([video, unlabeled]), cfg)


def test_items_without_objects_are_redrawn_then_a_clear_error():
    video = rect_video("late", n=10, late={k: 3 for k in RECTS})  # frames 0..2 hold no object
    cfg = SupervisedClipConfig(num_frames=2, max_skip=1, size=(H, W), min_pixels=1)
    ds = SupervisedClipDataset(VideoCollection([video]), cfg, clips_per_video=30)
    plain = [int(ds._draw(0, np.random.default_rng(ds._seeds(0, i, 0)[0]), 1)[2][0]) for i in range(30)]
    assert min(plain) < 3  # some first draws start on an empty frame ...
    assert min(int(ds[i]["frame_indices"][0]) for i in range(30)) >= 3  # ... and are re-drawn
    empty = rect_video("empty", n=4, ids=())
    with pytest.raises(SelfvosInputError, match=r"video 'empty': no object with at least 1 pixels in the first frame"):
        SupervisedClipDataset(VideoCollection([empty]), cfg)[0]


def test_items_are_reproducible_per_seed_epoch_index():
    coll = VideoCollection([rect_video("a"), rect_video("b", ids=(3, 7))])
    cfg = SupervisedClipConfig(num_frames=3, max_skip=3, size=(40, 56), max_objects=2, min_pixels=4, seed=5)
    ds = SupervisedClipDataset(coll, cfg, augment=SupervisedAugment(ALWAYS), clips_per_video=4)
    again = SupervisedClipDataset(coll, cfg, augment=SupervisedAugment(ALWAYS), clips_per_video=4)
    state = torch.random.get_rng_state()
    a, b = ds[3], again[3]
    assert torch.equal(torch.random.get_rng_state(), state)  # the global torch RNG is untouched
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ds.set_epoch(1)
    c = ds[3]
    assert ds.epoch == 1 and not torch.equal(a["frames"], c["frames"])
    ds.set_epoch(0)
    assert all(torch.equal(a[k], ds[3][k]) for k in a)
    other = SupervisedClipDataset(coll, SupervisedClipConfig(num_frames=3, max_skip=3, size=(40, 56), seed=6),
                                  augment=SupervisedAugment(ALWAYS), clips_per_video=4)[3]
    assert not torch.equal(a["frames"], other["frames"])


def test_skip_curriculum_drives_max_skip_and_persistent_workers_see_it():
    video = rect_video(n=30)
    cfg = SupervisedClipConfig(num_frames=4, max_skip=8, size=(16, 16), min_pixels=1)
    ds = SupervisedClipDataset(VideoCollection([video]), cfg, clips_per_video=12)
    cur = SkipCurriculum(start=1, end=8, steps=10)
    assert cur.apply(ds, 0) == 1 and ds.max_skip == 1
    assert all((ds[i]["frame_indices"].diff() == 1).all() for i in range(6))
    assert cur.apply(ds, 10) == 8
    assert max(int(ds[i]["frame_indices"].diff().max()) for i in range(12)) > 1
    with pytest.raises(ValueError, match="max_skip"):
        ds.max_skip = 0
    loader = DataLoader(ds, batch_size=4, num_workers=1, persistent_workers=True, collate_fn=collate_objects)
    first = next(iter(loader))["frame_indices"]
    cur.apply(ds, 0)
    ds.set_epoch(2)
    second = next(iter(loader))["frame_indices"]
    assert (second.diff(dim=1) == 1).all() and not torch.equal(first, second)
    assert torch.equal(second, torch.stack([ds[i]["frame_indices"] for i in range(4)]))


def test_select_objects_renumbers_and_rejects_non_id_masks():
    masks = torch.tensor([[[0, 9, 9, 4], [255, 4, 2, 0]], [[2, 2, 9, 7], [7, 4, 255, 0]]])  # (T=2, 2, 4)
    out, k = select_objects(masks, np.random.default_rng(0), max_objects=5, min_pixels=2)
    assert k == 2  # 9 and 4 have 2 px in frame 0; 2 has 1 px; 7 is absent from frame 0
    assert out.tolist() == [[[0, 2, 2, 1], [255, 1, 0, 0]], [[0, 0, 2, 0], [0, 1, 255, 0]]]
    assert select_objects(torch.zeros(1, 2, 2, dtype=torch.int64), np.random.default_rng(0), 3, 1)[1] == 0
    with pytest.raises(TypeError, match="integer object ids"):
        select_objects(masks.float(), np.random.default_rng(0), 3, 1)


def test_collate_objects_stacks_and_marks_valid_objects():
    def item(k: int, t: int = 2) -> dict:
        masks = torch.zeros(t, 4, 5, dtype=torch.int64)
        masks[:, 0, :k] = torch.arange(1, k + 1)
        return {"frames": torch.rand(t, 3, 4, 5), "masks": masks, "num_objects": torch.tensor(k),
                "video_index": torch.tensor(k), "frame_indices": torch.arange(t)}

    batch = collate_objects([item(1), item(3), item(2)])
    assert batch["object_valid"].tolist() == [[True, False, False], [True, True, True], [True, True, False]]
    assert batch["masks"].shape == (3, 2, 4, 5) and batch["frames"].shape == (3, 2, 3, 4, 5)
    assert batch["num_objects"].tolist() == [1, 3, 2] and batch["object_valid"].dtype == torch.bool
    with pytest.raises(ValueError, match="'frames'"):
        collate_objects([item(1), item(1, t=3)])
    with pytest.raises(ValueError, match="no items"):
        collate_objects([])


def test_real_schoolgirls_items_carry_several_objects():
    from tests.conftest import shared_path
    from selfvos.data.sources import open_source

    coll = open_source(f"davis:{shared_path('davis2017-multi')}")
    assert coll.names == ["schoolgirls"]
    video = coll["schoolgirls"]
    assert sorted(np.unique(video.mask(0)).tolist()) == list(range(8))
    cfg = SupervisedClipConfig(num_frames=3, max_skip=5, size=(120, 216), max_objects=7, seed=2)
    plain = SupervisedClipDataset(coll, cfg, clips_per_video=2)[0]
    orig = originals(video, plain, (120, 216))
    kept = [k for k in range(1, 8) if (orig[0] == k).sum() >= cfg.min_pixels]
    assert int(plain["num_objects"]) == len(kept) >= 5
    lut = torch.zeros(256, dtype=torch.int64)
    lut[VOID] = VOID
    lut[torch.tensor(kept)] = torch.arange(1, len(kept) + 1)
    assert torch.equal(plain["masks"], lut[orig])
    ds = SupervisedClipDataset(coll, cfg, augment=SupervisedAugment(), clips_per_video=3)
    batch = collate_objects([ds[i] for i in range(3)])
    assert (batch["num_objects"] >= 3).all()
    assert set(batch["masks"].unique().tolist()) <= set(range(8)) | {VOID}


def test_real_davis2016_train_items_carry_one_object():
    from tests.conftest import shared_path
    from selfvos.data.sources import open_source

    coll = open_source(f"davis:{shared_path('davis2016-train-240p')}")
    assert len(coll) == 30
    assert all(set(np.unique(v.mask(0)).tolist()) == {0, 1} for v in coll)
    sub = coll.select(["bear", "boat", "dog-agility"])
    ds = SupervisedClipDataset(sub, SupervisedClipConfig(size=(120, 216)), augment=SupervisedAugment())
    for index in range(len(ds)):
        item = ds[index]
        assert int(item["num_objects"]) == 1
        assert set(item["masks"].unique().tolist()) <= {0, 1, VOID} and (item["masks"][0] == 1).any()
