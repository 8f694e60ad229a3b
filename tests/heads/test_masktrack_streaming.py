"""The VIS core streams: tracks keep per-frame RLEs only (traced memory over a 200-frame video grows by the RLEs, not
by (H, W) masks), the streamed frames equal the tracks, the results are those of the masks; RVOS instances carry
their slot's 1 - p_stop as score."""
from __future__ import annotations

import sys
import tracemalloc

import numpy as np
import pytest
import torch

import selfvos
from selfvos.eval.vis import decode_rle, encode_track
from selfvos.heads.vis_core import GivenInstances, RVOSInstances, create_vis_core, track_id_map

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = {"feature_dim": 8, "hidden": 16, "embed_dim": 8}
RVOS_SMALL = {"skip_dim": 8, "hidden": (8, 8, 8, 8)}


class MovingBoxes:
    """A lazy video of ``frames`` (H, W) frames: two boxes moving, a third one leaving after 3/4 of the frames.
    ``frame(t)`` (H, W, 3) uint8 and ``ids(t)`` (H, W) uint8 are made on demand (nothing kept)."""

    name = "boxes"

    def __init__(self, frames: int = 200, size: tuple = (240, 320)) -> None:
        self.frames, self.size = frames, size

    def __len__(self) -> int:
        return self.frames

    def ids(self, t: int) -> np.ndarray:
        (h, w), x = self.size, t // 2
        ids = np.zeros(self.size, np.uint8)
        ids[int(0.08 * h):int(0.33 * h), int(0.03 * w) + x:int(0.19 * w) + x] = 1
        ids[int(0.5 * h):int(0.83 * h), int(0.62 * w) - x // 2:int(0.81 * w) - x // 2] = 2
        if t < 3 * self.frames // 4:
            ids[int(0.375 * h):int(0.46 * h), int(0.31 * w):int(0.44 * w) + x // 4] = 3
        return ids

    def frame(self, t: int) -> np.ndarray:
        palette = np.array([[30, 30, 30], [200, 40, 40], [40, 200, 40], [40, 40, 200]], np.uint8)
        return palette[self.ids(t)]


def rle_bytes(rle: dict) -> int:
    """Python-heap bytes of one RLE (dict, counts string, size list and its ints)."""
    return (sys.getsizeof(rle) + sys.getsizeof(rle["counts"]) + sys.getsizeof(rle["size"])
            + sum(sys.getsizeof(v) for v in rle["size"]))


def test_state_grows_by_the_rles_only_over_200_frames():
    torch.manual_seed(0)
    video = MovingBoxes()
    core = create_vis_core(selfvos.create_model("masktrack", **SMALL), GivenInstances(video.ids, shuffle=True),
                           head={"beta": 50.0}, max_side=64)
    stream = core.frames(video)
    for _ in range(10):  # warm-up: lazy imports, first allocations
        next(stream)
    before = {t.identity: len([s for s in t.segmentations if s is not None]) for t in core.tracks}
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for tracked in stream:
            assert set(tracked.masks) == set(tracked.instances)
        del tracked
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    tracks = core.tracks
    assert [t.identity for t in tracks] == [1, 2, 3] and sorted(sum(t.present) for t in tracks) == [150, 200, 200]
    assert all(s is None or isinstance(s, dict) for t in tracks for s in t.segmentations)  # no array is kept
    new_rles = [s for t in tracks for s in [x for x in t.segmentations if x is not None][before.get(t.identity, 0):]]
    # + list slots and scores, and 256 KiB of slack (measured: 305 KB grown for 257 KB of RLEs); one (H, W) mask kept
    # per frame would add 14.6 MB
    allowed = sum(rle_bytes(r) for r in new_rles) + (8 + 32) * 3 * 190 + 256 * 1024
    full = 190 * 3 * video.size[0] * video.size[1]  # what keeping the (H, W) bool masks would take: 43.8 MB
    assert grown < allowed < full / 20, (grown, allowed, full)


def test_streamed_frames_equal_the_tracks_and_results_encode_the_masks():
    torch.manual_seed(0)
    video = MovingBoxes(frames=12, size=(40, 60))
    core = create_vis_core(selfvos.create_model("masktrack", **SMALL), GivenInstances(video.ids, shuffle=True,
                                                                                      box_jitter=0.1),
                           head={"beta": 50.0}, max_side=48)
    streamed = [(f.index, f.ids, dict(f.categories)) for f in core.frames(video)]
    tracks = core.tracks
    assert [index for index, _, _ in streamed] == list(range(12))
    for t, ids, categories in streamed:
        assert np.array_equal(ids, track_id_map(tracks, t, video.size))
        assert set(categories) == {tr.identity for tr in tracks if tr.present[t]}
    for track in tracks:  # each stored RLE is the source's mask of that identity's object
        obj = int(video.ids(0)[track.mask(0)][0])
        for t in range(12):
            assert track.mask(t) is None or np.array_equal(track.mask(t), video.ids(t) == obj)
    records = core.to_vis_results(4, tracks)
    for track, record in zip(tracks, records):
        masks = np.stack([m if m is not None else np.zeros(video.size, bool) for m in map(track.mask, range(12))])
        assert record["segmentations"] == encode_track(masks, track.present)
        assert record["video_id"] == 4 and record["score"] == pytest.approx(track.score)
    assert np.array_equal(decode_rle(records[0]["segmentations"][0], *video.size), tracks[0].mask(0))


def test_rvos_instances_are_scored_by_one_minus_the_stop_probability():
    torch.manual_seed(0)
    rvos = selfvos.create_model("rvos", mode="zero_shot", max_instances=4, **RVOS_SMALL)
    rvos.config.inference.stop_threshold = 0.9  # a random model: let most slots through
    video = MovingBoxes(frames=6, size=(40, 60))
    source, twin = RVOSInstances(rvos, max_side=48), RVOSInstances(rvos, max_side=48)
    scores = []
    for t in range(len(video)):
        found = source(video.frame(t), t)
        ids, stop = twin.core.frame_instances(video.frame(t))
        present = np.array([int(v) for v in np.unique(ids) if v], int)
        assert stop.shape == (4,) and np.allclose(found.scores, 1 - stop[present - 1])
        assert [m.tolist() for m in found.masks] == [(ids == v).tolist() for v in present]
        scores += found.scores.tolist()
    assert len(scores) >= 2 and all(0 < s < 1 for s in scores) and len(set(scores)) > 1
    core = create_vis_core(selfvos.create_model("masktrack", **SMALL), RVOSInstances(rvos, max_side=48), max_side=48)
    tracks = core.segment_video(video)
    ranked = [r["score"] for r in core.to_vis_results(1, tracks)]
    assert all(0 < s < 1 for s in ranked) and len(set(ranked)) == len(ranked) > 1
