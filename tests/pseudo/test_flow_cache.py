"""The versioned, resumable on-disk flow cache, the zero-shot heads' neighbour-flow convention and the RAFT
option (run only where torchvision has RAFT)."""
from __future__ import annotations

import numpy as np
import pytest

from selfvos.data.video import InMemoryVideo, VideoSample
from selfvos.errors import SelfvosInputError
from selfvos.pseudo.flow import FLOW_CACHE_VERSION, FlowField, dis_flow, neighbour_flows
from selfvos.pseudo.motion import MotionSaliency


def moving_video(t: int = 4, h: int = 40, w: int = 56, name: str = "clip") -> InMemoryVideo:
    rng = np.random.default_rng(1)
    frames = np.repeat(rng.integers(0, 120, (1, h, w, 3), dtype=np.uint8), t, axis=0)
    patch = rng.integers(130, 255, (12, 12, 3), dtype=np.uint8)
    for i in range(t):
        frames[i, 8 + i:20 + i, 6 + 3 * i:18 + 3 * i] = patch
    return InMemoryVideo(VideoSample(frames=frames, frame_names=[f"{i:05d}" for i in range(t)], name=name))


class CountingField(FlowField):
    """Counts the flows computed (cache misses); raises KeyboardInterrupt at computation ``kill_at``."""

    def __init__(self, kill_at: int = -1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.computed, self.kill_at = [], kill_at

    def compute(self, reference, target):
        if len(self.computed) == self.kill_at:
            raise KeyboardInterrupt
        self.computed.append(reference.shape)
        return super().compute(reference, target)


def test_cache_hit_returns_identical_arrays(tmp_path):
    video = moving_video()
    field = CountingField(cache_dir=tmp_path, max_side=32)
    first = field(video, 1, 2)
    assert len(field.computed) == 1 and first.dtype == np.float32 and first.shape == (23, 32, 2)
    again = CountingField(cache_dir=tmp_path, max_side=32)
    np.testing.assert_array_equal(again(video, 1, 2), first)
    assert again.computed == []  # read from disk
    np.testing.assert_allclose(first, FlowField(max_side=32)(video, 1, 2), atol=2e-2)  # float16 on disk


def test_every_parameter_has_its_own_version_folder(tmp_path):
    base = FlowField(cache_dir=tmp_path, max_side=32)
    assert base.cache_folder("clip") == tmp_path / "clip" / f"dis-medium-side32-v{FLOW_CACHE_VERSION}"
    others = [FlowField(cache_dir=tmp_path, max_side=48), FlowField(cache_dir=tmp_path, max_side=32, preset="fast")]
    folders = {f.cache_folder("clip") for f in [base, *others]}
    assert len(folders) == 3
    video = moving_video()
    base(video, 0, 1), others[0](video, 0, 1)
    assert base(video, 0, 1).shape != others[0](video, 0, 1).shape  # never mixed up


def test_a_killed_run_resumes_with_only_the_missing_pairs(tmp_path):
    video = moving_video(t=5)
    killed = CountingField(kill_at=2, cache_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        neighbour_flows(killed, video, range(5))
    folder = killed.cache_folder("clip")
    assert sorted(p.name for p in folder.iterdir()) == ["000000_000001.npy", "000001_000002.npy"]
    (folder / ".000002_000003.npy.0123456789ab.tmp").write_bytes(b"half a file")  # a kill during a write
    resumed = CountingField(cache_dir=tmp_path)
    flows = neighbour_flows(resumed, video, range(5))
    assert len(resumed.computed) == 3  # 2->3, 3->4 and the last frame's 4->3
    fresh = neighbour_flows(CountingField(cache_dir=tmp_path / "fresh"), video, range(5))
    np.testing.assert_array_equal(flows, fresh)


def test_neighbour_flows_convention():
    video = moving_video(t=3)
    flows = neighbour_flows(FlowField(), video, [0, 1, 2])
    assert flows.shape == (3, 40, 56, 2) and flows.dtype == np.float32
    frames = [video.frame(t) for t in range(3)]
    for t, (i, j) in enumerate([(0, 1), (1, 2), (2, 1)]):
        np.testing.assert_array_equal(flows[t], dis_flow(frames[i], frames[j]))
    assert np.median(flows[0][8:20, 6:18, 0]) == pytest.approx(3.0, abs=0.5)  # the patch moves 3 px right
    single = InMemoryVideo(VideoSample(frames=video.sample.frames[:1], frame_names=["00000"], name="one"))
    assert not neighbour_flows(FlowField(max_side=28), single, [0]).any()
    assert neighbour_flows(FlowField(max_side=28), single, [0]).shape == (1, 20, 28, 2)


def test_motion_labeler_shares_the_cache(tmp_path):
    video = moving_video()
    MotionSaliency(cache_dir=str(tmp_path), max_side=32)(video, 1)
    folder = tmp_path / "clip" / f"dis-medium-side32-v{FLOW_CACHE_VERSION}"
    assert sorted(p.name for p in folder.iterdir()) == ["000001_000000.npy", "000001_000002.npy"]


def test_raft_needs_local_weights(tmp_path):
    with pytest.raises(SelfvosInputError, match="raft|RAFT"):
        FlowField(method="raft")
    with pytest.raises(SelfvosInputError, match="unknown flow method"):
        FlowField(method="farneback")


def test_raft_small_through_the_flow_field(tmp_path):
    torch = pytest.importorskip("torch")
    optical_flow = pytest.importorskip("torchvision.models.optical_flow")
    torch.manual_seed(0)
    weights = tmp_path / "raft_small.pt"
    torch.save(optical_flow.raft_small(weights=None).state_dict(), weights)
    video = moving_video(t=2, h=64, w=64)
    field = FlowField(method="raft", raft_weights=weights, cache_dir=tmp_path / "cache", device="cpu")
    assert field.cache_folder("clip").name == f"raft-raft_small-it12-side0-v{FLOW_CACHE_VERSION}"
    flows = neighbour_flows(field, video, [0, 1])
    assert flows.shape == (2, 64, 64, 2) and flows.dtype == np.float32 and np.isfinite(flows).all()
    assert sorted(p.name for p in field.cache_folder("clip").iterdir()) == ["000000_000001.npy", "000001_000000.npy"]
