"""Pseudo-label store: 8-bit round trip, versioning by round, resume after an interruption, atomic writes."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from selfvos.data.video import InMemoryVideo, VideoCollection, VideoSample
from selfvos.errors import SelfvosInputError
from selfvos.pseudo.base import PseudoLabeler
from selfvos.pseudo.generate import generate_pseudo_labels
from selfvos.pseudo.store import PseudoLabelStore


class RampLabeler(PseudoLabeler):
    """Soft mask = frame index / 10 everywhere; can be told to crash after ``fail_after`` calls."""

    name = "ramp"

    def __init__(self, fail_after: int = -1, offset: float = 0.0) -> None:
        self.calls, self.fail_after, self.offset = 0, fail_after, offset

    def __call__(self, video, index):
        if self.calls == self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        return np.full((6, 8), min(1.0, index / 10 + self.offset), np.float32)

    def config(self):
        return {"type": self.name, "offset": self.offset}


def collection(n_videos: int = 3, n_frames: int = 5) -> VideoCollection:
    videos = []
    for v in range(n_videos):
        frames = np.zeros((n_frames, 6, 8, 3), np.uint8)
        masks = np.zeros((n_frames, 6, 8), np.uint8)
        masks[:, :3] = 1
        videos.append(InMemoryVideo(VideoSample(frames=frames, frame_names=[f"f{i}" for i in range(n_frames)],
                                                name=f"vid{v}", masks=masks)))
    return VideoCollection(videos, source="toy", kind="toy")


def test_write_read_round_trip_is_8_bit(tmp_path):
    store = PseudoLabelStore(tmp_path)
    store.begin_round(0, {"type": "x"})
    soft = np.linspace(0, 1, 48, dtype=np.float32).reshape(6, 8)
    path = store.write(0, "v", 3, soft)
    assert path.name == "00003.png" and Image.open(path).mode == "L"
    back = store.read(0, "v", 3, staging=True)
    assert back.dtype == np.float32 and np.abs(back - soft).max() <= 0.5 / 255 + 1e-6
    store.finish_round(0)
    np.testing.assert_array_equal(store.read(0, "v", 3), back)
    assert store.frames(0, "v") == [3]
    with pytest.raises(FileNotFoundError):
        store.read(0, "v", 4)


def test_rounds_are_versioned_and_never_overwritten(tmp_path):
    store, data = PseudoLabelStore(tmp_path), collection()
    m0 = generate_pseudo_labels(data, store, 0, RampLabeler(), progress=False)
    assert m0["complete"] and m0["completed_videos"] == ["vid0", "vid1", "vid2"] and store.latest_round() == 0
    assert m0["quality"]["frames"] == 15 and 0 <= m0["quality"]["mean_j"] <= 1
    generate_pseudo_labels(data, store, 1, RampLabeler(offset=0.5), progress=False)
    assert store.rounds() == [0, 1] and store.latest_round() == 1
    assert store.read(0, "vid1", 2)[0, 0] == pytest.approx(0.2, abs=1 / 255)  # round 0 untouched
    assert store.read(1, "vid1", 2)[0, 0] == pytest.approx(0.7, abs=1 / 255)
    with pytest.raises(SelfvosInputError, match="round already complete"):
        generate_pseudo_labels(data, store, 0, RampLabeler(offset=0.3), progress=False)
    generate_pseudo_labels(data, store, 0, RampLabeler(offset=0.3), progress=False, overwrite=True)
    assert store.read(0, "vid1", 2)[0, 0] == pytest.approx(0.5, abs=1 / 255)
    assert store.read(1, "vid1", 2)[0, 0] == pytest.approx(0.7, abs=1 / 255)  # overwrite touches only round 0
    manifest = json.loads((tmp_path / "round_000" / "manifest.json").read_text())
    assert manifest["labeler"] == {"type": "ramp", "offset": 0.3} and manifest["source"] == "toy"


def test_interrupted_generation_resumes_where_it_stopped(tmp_path):
    store, data = PseudoLabelStore(tmp_path), collection()
    with pytest.raises(KeyboardInterrupt):
        generate_pseudo_labels(data, store, 0, RampLabeler(fail_after=7), progress=False)  # dies inside vid1
    manifest = store.manifest(0, staging=True)
    assert not manifest["complete"] and manifest["completed_videos"] == ["vid0"]
    assert store.latest_round() is None and store.latest_round(complete_only=False) == 0
    assert store.is_video_complete(0, "vid0") and not store.is_video_complete(0, "vid1")
    resumed = RampLabeler()
    final = generate_pseudo_labels(data, store, 0, resumed, progress=False)
    assert resumed.calls == 10  # vid0 was not redone
    assert final["complete"] and store.latest_round() == 0


def test_unfinished_round_with_other_settings_is_not_silently_mixed(tmp_path):
    store = PseudoLabelStore(tmp_path)
    store.begin_round(1, {"type": "ramp"}, videos=["a"])
    assert store.begin_round(1, {"type": "ramp"}, videos=["b"])["videos"] == ["a", "b"]  # same settings: resume
    with pytest.raises(SelfvosInputError, match="different labeler settings"):
        store.begin_round(1, {"type": "other"})
    assert store.begin_round(1, {"type": "other"}, overwrite=True)["videos"] == []


def test_failed_write_leaves_previous_file_intact(tmp_path, monkeypatch):
    store = PseudoLabelStore(tmp_path)
    store.begin_round(0, {"type": "x"})
    store.write(0, "v", 0, np.full((4, 4), 0.25, np.float32))

    def broken_save(self, fh, *args, **kwargs):
        fh.write(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        store.write(0, "v", 0, np.full((4, 4), 0.75, np.float32))
    monkeypatch.undo()
    assert store.read(0, "v", 0, staging=True)[0, 0] == pytest.approx(0.25, abs=1 / 255)
    assert sorted(p.name for p in store.frame_path(0, "v", 0, staging=True).parent.iterdir()) == ["00000.png"]


def test_mask_provider_for_the_clip_sampler(tmp_path):
    store, data = PseudoLabelStore(tmp_path), collection()
    with pytest.raises(FileNotFoundError):
        store.mask_provider()
    generate_pseudo_labels(data, store, 0, RampLabeler(), frame_step=2, progress=False)
    provide = store.mask_provider()
    assert provide("vid2", 4)[0, 0] == pytest.approx(0.4, abs=1 / 255)
    assert provide("vid2", 3) is None and provide("nope", 0) is None
    marker = json.loads((tmp_path / "round_000" / "vid2" / "_complete.json").read_text())
    assert marker == {"frames": [0, 2, 4], "frame_names": ["f0", "f2", "f4"]}


def test_corrupt_manifest_names_the_file(tmp_path):
    store = PseudoLabelStore(tmp_path)
    store.begin_round(0, {"type": "x"})
    store.finish_round(0)
    (tmp_path / "round_000" / "manifest.json").write_text("{not json")
    with pytest.raises(SelfvosInputError, match="manifest.json: corrupt manifest"):
        store.manifest(0)


def _visible(root) -> list:
    """Names a reader of the store sees: everything in ``root`` that is not hidden (staging, temporaries)."""
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))


def test_failure_mid_round_leaves_no_partial_round(tmp_path):
    """A crash inside a video leaves no round_000 folder at all; the resumed run publishes the whole round."""
    store, data = PseudoLabelStore(tmp_path), collection()
    with pytest.raises(KeyboardInterrupt):
        generate_pseudo_labels(data, store, 0, RampLabeler(fail_after=7), progress=False)
    assert _visible(tmp_path) == [] and store.rounds() == [] and store.latest_round() is None
    with pytest.raises(FileNotFoundError):
        store.mask_provider(0)
    generate_pseudo_labels(data, store, 0, RampLabeler(), progress=False)
    assert _visible(tmp_path) == ["round_000"] and sorted(p.name for p in tmp_path.iterdir()) == ["round_000"]
    assert sorted(p.name for p in (tmp_path / "round_000").iterdir()) == ["manifest.json", "vid0", "vid1", "vid2"]
    assert all(store.frames(0, f"vid{v}") == list(range(5)) for v in range(3))


def test_failed_overwrite_keeps_the_old_complete_round(tmp_path):
    """``overwrite=True`` that dies part-way leaves the previous complete round readable and unchanged."""
    store, data = PseudoLabelStore(tmp_path), collection()
    generate_pseudo_labels(data, store, 0, RampLabeler(), progress=False)
    with pytest.raises(KeyboardInterrupt):
        generate_pseudo_labels(data, store, 0, RampLabeler(fail_after=7, offset=0.5), progress=False, overwrite=True)
    assert store.rounds() == [0] and store.manifest(0)["labeler"] == {"type": "ramp", "offset": 0.0}
    assert store.read(0, "vid2", 4)[0, 0] == pytest.approx(0.4, abs=1 / 255)
    generate_pseudo_labels(data, store, 0, RampLabeler(offset=0.5), progress=False, overwrite=True)
    assert store.read(0, "vid2", 4)[0, 0] == pytest.approx(0.9, abs=1 / 255)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round_000"]


def test_stale_temporaries_of_a_killed_run_are_cleaned_on_the_next_run(tmp_path):
    """Leftovers of kills at each step of publishing a round are resolved by the next begin_round."""
    store, data = PseudoLabelStore(tmp_path), collection(n_videos=1)
    generate_pseudo_labels(data, store, 0, RampLabeler(), progress=False)
    (tmp_path / ".round_000.old-0123abcd").mkdir()  # killed after the new round 0 was moved into place
    store.begin_round(1, {"type": "ramp", "offset": 0.0})
    (store.staging_dir(1) / "vid0").mkdir()
    (store.staging_dir(1) / "vid0" / ".00000.png.0123456789ab.tmp").write_bytes(b"\x89PNG half")
    (store.staging_dir(1) / ".manifest.json.0123456789ab.tmp").write_text("{")
    generate_pseudo_labels(data, store, 1, RampLabeler(), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round_000", "round_001"]
    assert not list(tmp_path.rglob("*.tmp")) and store.rounds() == [0, 1]


def test_a_round_killed_while_being_moved_into_place_is_recovered(tmp_path):
    """Killed between finishing the manifest and the folder move, or between the two renames of a replace."""
    store, data = PseudoLabelStore(tmp_path), collection(n_videos=1)
    generate_pseudo_labels(data, store, 0, RampLabeler(), progress=False)
    (tmp_path / "round_000").rename(store.staging_dir(0))  # finished manifest, not yet moved
    assert store.rounds() == []
    store.clean_stale()
    assert store.rounds() == [0] and not store.staging_dir(0).exists()
    (tmp_path / "round_000").rename(tmp_path / ".round_000.old-0badc0de")  # old copy moved aside, new one lost
    store.clean_stale()
    assert store.rounds() == [0] and sorted(p.name for p in tmp_path.iterdir()) == ["round_000"]


def test_unfinished_round_of_the_old_layout_is_resumed(tmp_path):
    """A ``round_000`` without ``complete`` (written before rounds were staged) is resumed, not listed."""
    store, data = PseudoLabelStore(tmp_path), collection()
    with pytest.raises(KeyboardInterrupt):
        generate_pseudo_labels(data, store, 0, RampLabeler(fail_after=7), progress=False)
    store.staging_dir(0).rename(tmp_path / "round_000")
    assert store.rounds() == [] and store.latest_round() is None
    resumed = RampLabeler()
    generate_pseudo_labels(data, store, 0, resumed, progress=False)
    assert resumed.calls == 10 and store.rounds() == [0]
