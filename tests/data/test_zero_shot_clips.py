"""Clips for the zero-shot heads: ``binary`` (every object of every frame -> 1) and ``flow`` (the heads' motion
input, computed after augmentation), through both the real-clip and the pseudo-video datasets and the collate."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from selfvos.data.augment import SupervisedAugment
from selfvos.data.pseudo_video import PseudoVideoDataset
from selfvos.data.supervised import (
    SupervisedClipConfig,
    SupervisedClipDataset,
    binary_foreground,
    collate_objects,
    neighbour_clip_flows,
)
from selfvos.data.video import VOID, VideoCollection
from selfvos.pseudo.flow import dis_flow
from tests.data.test_supervised import ALWAYS, originals, rect_video

pytestmark = pytest.mark.usefixtures("one_thread")


def test_binary_items_mark_every_object_of_every_frame():
    video = rect_video(late={20: 3})  # id 20 appears only from frame 3: still foreground
    cfg = SupervisedClipConfig(num_frames=4, max_skip=2, size=(48, 64), max_objects=1, binary=True)
    dataset = SupervisedClipDataset(VideoCollection([video]), cfg, clips_per_video=4)
    for index in range(len(dataset)):
        item = dataset[index]
        ids = originals(video, item, cfg.size)
        expected = torch.where(ids == VOID, VOID, (ids != 0).long())
        assert torch.equal(item["masks"], expected) and int(item["num_objects"]) == 1
        assert "flows" not in item
    batch = collate_objects([dataset[0], dataset[1]])
    assert batch["object_valid"].shape == (2, 1) and batch["object_valid"].all()


def test_binary_foreground_needs_enough_pixels_in_some_frame():
    masks = torch.zeros(3, 8, 8, dtype=torch.int64)
    masks[:, 0] = VOID
    masks[2, 4:6, 4:6] = 9  # 4 pixels, last frame only
    binary, k = binary_foreground(masks, min_pixels=4)
    assert k == 1 and set(binary.unique().tolist()) == {0, 1, VOID} and int((binary == 1).sum()) == 4
    assert binary_foreground(masks, min_pixels=5)[1] == 0
    with pytest.raises(TypeError):
        binary_foreground(masks.float(), 1)


def test_neighbour_clip_flows_convention():
    rng = np.random.default_rng(0)
    images = np.repeat(rng.integers(0, 120, (1, 40, 56, 3), dtype=np.uint8), 3, axis=0)
    for t in range(3):
        images[t, 10:22, 8 + 3 * t:20 + 3 * t] = 220
    frames = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    flows = neighbour_clip_flows(frames)
    assert flows.shape == (3, 2, 40, 56) and flows.dtype == torch.float32
    for t, (i, j) in enumerate([(0, 1), (1, 2), (2, 1)]):
        np.testing.assert_array_equal(flows[t].permute(1, 2, 0).numpy(), dis_flow(images[i], images[j]))
    assert not neighbour_clip_flows(frames[:1]).any() and neighbour_clip_flows(frames[:1]).shape == (1, 2, 40, 56)


@pytest.mark.parametrize("dataset_class", [SupervisedClipDataset, PseudoVideoDataset])
def test_flows_are_computed_on_the_augmented_frames(dataset_class):
    video = rect_video()
    cfg = SupervisedClipConfig(num_frames=3, max_skip=2, size=(48, 64), binary=True, flow=True, flow_preset="fast")
    dataset = dataset_class(VideoCollection([video]), cfg, augment=SupervisedAugment(ALWAYS), clips_per_video=2)
    items = [dataset[0], dataset[1]]
    for item in items:
        assert item["flows"].shape == (3, 2, 48, 64) and item["flows"].dtype == torch.float32
        torch.testing.assert_close(item["flows"], neighbour_clip_flows(item["frames"], "fast"))
        assert set(item["masks"].unique().tolist()) <= {0, 1, VOID}
    batch = collate_objects(items)
    assert batch["flows"].shape == (2, 3, 2, 48, 64)


def test_flow_preset_is_validated():
    with pytest.raises(ValueError, match="flow_preset"):
        SupervisedClipConfig(flow_preset="slowest")
