"""PyAV video reader: frame counts without decoding, stride / max_side / time range, random access equal
to sequential decoding, bounded decoding work, and generated mp4/mkv/webm/avi/mov files."""
from __future__ import annotations

import pickle
import random
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from selfvos.data.image_io import output_size
from selfvos.data.video_file import VideoFileVideo, open_video
from tests.conftest import shared_path

REAL_COUNTS = {"dog": 289, "juggle": 247, "bedroom": 200, "cutie_example": 117}


def write_video(path: Path, n: int = 30, size=(48, 64), codec: str = "libx264", rate: int = 10, gop: int = 8) -> list:
    """Encode ``n`` noise frames; return what a decoder gives back (the reference frames)."""
    rng = np.random.default_rng(1)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        for _ in range(n):
            coarse = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
            image = cv2.resize(coarse, size[::-1], interpolation=cv2.INTER_LINEAR)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


class DecodeCounter:
    """Counts frames the reader decodes (wraps VideoFileVideo._frame_position)."""

    def __init__(self, monkeypatch):
        self.count = 0
        original = VideoFileVideo._frame_position

        def counted(video, frame):
            self.count += 1
            return original(video, frame)

        monkeypatch.setattr(VideoFileVideo, "_frame_position", counted)


def test_real_frame_counts_come_from_metadata_without_decoding(monkeypatch):
    counter = DecodeCounter(monkeypatch)
    videos = open_video(shared_path("videos"))
    assert {v.name: len(v) for v in videos} == REAL_COUNTS
    assert counter.count == 0 and all(v._index is None for v in videos)  # no packet pass either
    dog = videos["dog"]
    assert dog.fps == pytest.approx(30000 / 1001) and dog.frame_names[-1] == "00288"
    assert dog._packet_index().pts.size == 289  # the packet index agrees with the metadata


def test_random_access_equals_sequential_decode_and_seeks_to_keyframe(monkeypatch):
    path = shared_path("videos", "cutie_example.mp4")
    sequential_video = VideoFileVideo(path)
    counter = DecodeCounter(monkeypatch)
    sequential = [sequential_video.frame(i) for i in range(len(sequential_video))]
    assert counter.count == 117  # one decode per frame: never restarts from the beginning
    with av.open(str(path)) as container:
        reference = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(sequential) == len(reference) == 117
    assert all(np.array_equal(a, b) for a, b in zip(sequential, reference))
    video = VideoFileVideo(path)
    order = list(range(117))
    random.Random(0).shuffle(order)
    for i in order[:12] + [116, 0, 116]:
        np.testing.assert_array_equal(video.frame(i), reference[i])

    dog = VideoFileVideo(shared_path("videos", "dog.mp4"))  # keyframes at frames 0 and 250
    counter.count = 0
    dog.frame(260)
    assert counter.count <= 11 + 4  # from the keyframe at 250 (+ a few reordered B-frames), not from 0
    dog.frame(260)
    assert counter.count <= 15  # served from the cache


def test_stride_max_side_and_time_range_on_real_video():
    path = shared_path("videos", "cutie_example.mp4")
    with av.open(str(path)) as container:
        reference = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    strided = VideoFileVideo(path, frame_stride=4)
    assert len(strided) == 30 and strided.fps == pytest.approx(25 / 4)
    for i in (0, 1, 17, 29):
        np.testing.assert_array_equal(strided.frame(i), reference[4 * i])
    small = VideoFileVideo(path, max_side=160)
    frame = small.frame(50)
    assert frame.shape == (120, 160, 3)
    expected = cv2.resize(reference[50], (160, 120), interpolation=cv2.INTER_AREA)
    assert np.abs(frame.astype(int) - expected).mean() < 3.0
    ranged = VideoFileVideo(path, start=1.0, end=2.0, frame_stride=2)  # 25 fps: frames 25..49
    assert len(ranged) == 13 and ranged.raw_index(0) == 25 and ranged.raw_index(12) == 49
    np.testing.assert_array_equal(ranged.frame(3), reference[31])
    assert ranged.frame_names == [f"{i:05d}" for i in range(13)]


@pytest.mark.parametrize("suffix,codec", [("mp4", "libx264"), ("mkv", "libx264"), ("webm", "libvpx-vp9"),
                                          ("avi", "mpeg4"), ("mov", "libx264")])
def test_generated_containers_random_access(tmp_path, suffix, codec):
    path = tmp_path / f"clip.{suffix}"
    reference = write_video(path, codec=codec)
    video = VideoFileVideo(path)
    assert len(video) == 30 and video.fps == pytest.approx(10.0)
    for i in (29, 3, 17, 0, 28, 9, 10):
        np.testing.assert_array_equal(video.frame(i), reference[i])


def test_folder_of_videos_load_and_pickle(tmp_path):
    write_video(tmp_path / "b.mp4", n=12)
    reference = write_video(tmp_path / "a.mkv", n=20, size=(40, 100))
    (tmp_path / "notes.txt").write_text("not a video")
    videos = open_video(tmp_path, max_side=50)
    assert videos.names == ["a", "b"] and [len(v) for v in videos] == [20, 12]
    sample = videos["a"].load([2, 5])
    assert sample.frames.shape == (2, 20, 50, 3) and sample.masks is None and sample.frame_names == ["00002", "00005"]
    clone = pickle.loads(pickle.dumps(VideoFileVideo(tmp_path / "a.mkv")))
    np.testing.assert_array_equal(clone.frame(7), reference[7])
    assert open_video(tmp_path, sequences=["b"]).names == ["b"]


def test_output_size_keeps_aspect_and_never_enlarges():
    assert output_size(1280, 720, 320) == (320, 180)
    assert output_size(480, 854, 427) == (240, 427)
    assert output_size(64, 48, 320) == (64, 48)
    assert output_size(64, 48, None) == (64, 48)
