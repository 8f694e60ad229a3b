"""Bad input gives ONE SelfvosInputError that names the file and the problem: structural problems when
the source is opened, per-file problems when that frame or mask is read."""
from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from selfvos.data.davis import open_davis
from selfvos.data.frames import open_frames
from selfvos.data.video_file import VideoFileVideo, open_video
from selfvos.data.youtube_vos import open_youtube_vos
from selfvos.errors import SelfvosInputError


def _davis(root: Path, n: int = 4, size=(12, 16)) -> tuple:
    frames, masks = root / "JPEGImages" / "seq", root / "Annotations" / "seq"
    frames.mkdir(parents=True)
    masks.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full(size + (3,), 40 * i, np.uint8)).save(frames / f"{i:05d}.jpg")
        ids = np.zeros(size, np.uint8)
        ids[2:6, 3:9] = 1
        Image.fromarray(ids * 255, mode="L").save(masks / f"{i:05d}.png")
    return frames, masks


def _mp4(path: Path, options=None, n: int = 30) -> None:
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(n):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def test_annotation_without_frame_fails_at_open(tmp_path):
    frames, masks = _davis(tmp_path)
    (frames / "00003.jpg").unlink()
    with pytest.raises(SelfvosInputError, match=r"00003\.png: annotation has no matching frame"):
        open_davis(tmp_path)


def test_gap_in_frames_fails_at_open(tmp_path):
    frames, masks = _davis(tmp_path, n=5)
    (frames / "00002.jpg").unlink()
    (masks / "00002.png").unlink()
    with pytest.raises(SelfvosInputError, match=r"seq: missing frame '00002'") as err:
        open_davis(tmp_path)
    assert err.value.path == str(frames)
    assert len(open_davis(tmp_path, check_gaps=False)["seq"]) == 4


def test_mask_and_frame_of_different_sizes_fail_when_read(tmp_path):
    frames, masks = _davis(tmp_path)
    Image.fromarray(np.zeros((10, 16), np.uint8), mode="L").save(masks / "00001.png")
    video = open_davis(tmp_path)["seq"]
    video.mask(0)
    with pytest.raises(SelfvosInputError, match=r"00001\.png: mask is 16x10 \(WxH\) but frame 00001\.jpg is 16x12"):
        video.mask(1)


def test_rgb_mask_is_rejected(tmp_path):
    frames, masks = _davis(tmp_path)
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(masks / "00002.png")
    with pytest.raises(SelfvosInputError, match=r"00002\.png: mask has mode 'RGB'.*palette"):
        open_davis(tmp_path)["seq"].mask(2)


@pytest.mark.parametrize("which", ["jpeg", "png"])
def test_truncated_jpeg_or_png_fails_when_read(tmp_path, which):
    frames, masks = _davis(tmp_path, size=(64, 64))
    rng = np.random.default_rng(0)  # noise: the cut lands in the pixel data, past the header
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(frames / "00001.jpg")
    Image.fromarray(rng.integers(0, 2, (64, 64), dtype=np.uint8) * 255, mode="L").save(masks / "00001.png")
    bad = _truncate(frames / "00001.jpg" if which == "jpeg" else masks / "00001.png", keep=0.4)
    video = open_davis(tmp_path)["seq"]
    video.frame(0)
    with pytest.raises(SelfvosInputError, match=rf"{bad.name}: corrupt or truncated image"):
        video.frame(1) if which == "jpeg" else video.mask(1)


def test_not_an_image_fails_when_read(tmp_path):
    (tmp_path / "00000.jpg").write_bytes(os.urandom(300))
    video = open_frames(tmp_path)[0]
    with pytest.raises(SelfvosInputError, match=r"00000\.jpg: not a readable image"):
        video.frame(0)


def test_truncated_video_without_index_fails_at_open(tmp_path):
    _mp4(tmp_path / "clip.mp4")  # moov atom at the end: cut off
    with pytest.raises(SelfvosInputError, match=r"clip\.mp4: cannot open video"):
        VideoFileVideo(_truncate(tmp_path / "clip.mp4"))


def test_truncated_faststart_video_fails_at_the_missing_frame(tmp_path):
    _mp4(tmp_path / "clip.mp4", options={"movflags": "faststart"})  # index first, data cut off
    video = VideoFileVideo(_truncate(tmp_path / "clip.mp4"))
    assert len(video) == 30
    video.frame(0)
    with pytest.raises(SelfvosInputError, match=r"clip\.mp4: (corrupt video data|frame \d+ could not be decoded)"):
        for i in range(len(video)):
            video.frame(i)
    fresh = VideoFileVideo(tmp_path / "clip.mp4")
    with pytest.raises(SelfvosInputError, match=r"clip\.mp4: frame 29 (is not in the file|could not be decoded)"):
        fresh.frame(29)  # random access past the cut


def test_unreadable_video_and_bad_options(tmp_path):
    (tmp_path / "noise.mkv").write_bytes(os.urandom(4000))
    with pytest.raises(SelfvosInputError, match=r"noise\.mkv: cannot (open|index)"):
        open_video(tmp_path / "noise.mkv")
    _mp4(tmp_path / "ok.mp4", n=10)
    with pytest.raises(SelfvosInputError, match=r"ok\.mp4: no video frames between 5.0s and 6.0s"):
        VideoFileVideo(tmp_path / "ok.mp4", start=5.0, end=6.0)
    with pytest.raises(SelfvosInputError, match="frame_stride must be >= 1"):
        VideoFileVideo(tmp_path / "ok.mp4", frame_stride=0)


@pytest.mark.parametrize("opener", [open_frames, open_video, open_davis, open_youtube_vos])
def test_empty_folder_fails_at_open(tmp_path, opener):
    if opener in (open_davis, open_youtube_vos):
        (tmp_path / "JPEGImages").mkdir()
    with pytest.raises(SelfvosInputError, match="empty folder") as err:
        opener(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_empty_sequence_folder_fails_at_open(tmp_path):
    _davis(tmp_path)
    (tmp_path / "JPEGImages" / "empty").mkdir()
    with pytest.raises(SelfvosInputError, match=r"empty: empty folder: no frames"):
        open_davis(tmp_path)
