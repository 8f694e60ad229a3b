"""Video files: random bytes (with and without a container's magic), zero-length files, real files from PyAV's
encoders cut or damaged at random offsets, and files under the wrong extension.

Property: ``open_source(file)`` (what the CLI calls) raises ``SelfvosInputError`` naming the file, or gives one
video whose frames all decode to ``(H, W, 3)`` uint8 of the announced size (sequentially and by random access)
or fail with ``SelfvosInputError`` naming the file; ``verify()`` and ``selfvos data inspect`` accept the file or
report it damaged (non-zero exit, ``selfvos: error:`` line). Nothing hangs or ends in a traceback.
"""
from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfvos.data.sources import open_source
from selfvos.data.video_file import VIDEO_EXTENSIONS
from tests.fuzz._props import damaged, input_error_or, run_cli, write_bytes

# (file name, container options, codec, pixel format)
ENCODINGS = [
    ("h264.mp4", {}, "libx264", "yuv420p"),
    ("faststart.mp4", {"movflags": "faststart"}, "libx264", "yuv420p"),
    ("h264.mkv", {}, "libx264", "yuv420p"),
    ("mpeg4.avi", {}, "mpeg4", "yuv420p"),
    ("vp8.webm", {}, "libvpx", "yuv420p"),
    ("mjpeg.mov", {}, "mjpeg", "yuvj420p"),
]
MAGIC = [b"", b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom", b"\x1aE\xdf\xa3", b"RIFF\x00\x10\x00\x00AVI LIST",
         b"\x00\x00\x00\x14ftypqt  "]


def encode(path: Path, options: dict, codec: str, pix_fmt: str, frames: int = 10) -> bytes:
    """A 32x24 clip of a moving bar on noise; returns the file's bytes."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 24, pix_fmt
        for i in range(frames):
            image = rng.integers(0, 40, (24, 32, 3), dtype=np.uint8)
            image[:, 3 * i:3 * i + 3] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path.read_bytes()


class Clips(dict):
    """File name -> bytes, shown by name only in a failure report (the bytes are long)."""

    def __repr__(self) -> str:
        return f"Clips({sorted(self)})"


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Clips:
    """File name -> bytes of each encoding in ENCODINGS."""
    folder = tmp_path_factory.mktemp("clips")
    return Clips({name: encode(folder / name, options, codec, fmt) for name, options, codec, fmt in ENCODINGS})


def check_video_file(path: Path, *, random_access: bool = True) -> None:
    """open_source's contract for one file (see the module docstring)."""
    collection, err = input_error_or(lambda: open_source(str(path)))
    if err is not None:
        assert err.path == str(path)
        return
    (video,) = list(collection)
    assert len(video) == len(video.frame_names) == len(set(video.frame_names)) > 0
    width, height = video.size_wh
    order = ([len(video) - 1, 0] if random_access else []) + list(range(len(video)))
    for index in order:
        frame, err = input_error_or(partial(video.frame, index))
        if err is not None:
            assert err.path == str(path)
            break
        assert frame.dtype == np.uint8 and frame.shape == (height, width, 3)
    _, err = input_error_or(video.verify)
    assert err is None or err.path == str(path)
    video.close()


@settings(max_examples=60)
@given(magic=st.sampled_from(MAGIC), noise=st.binary(max_size=3000), ext=st.sampled_from(VIDEO_EXTENSIONS))
def test_random_bytes_and_empty_files(magic, noise, ext):
    """Noise behind a container's magic bytes (or nothing at all) under every video extension."""
    with tempfile.TemporaryDirectory() as tmp:
        check_video_file(write_bytes(Path(tmp) / f"clip{ext}", magic + noise))


@settings(max_examples=110)
@given(data=st.data())
def test_damaged_real_videos(data, clips):
    """A real file truncated, overwritten, shortened or with a span repeated, anywhere in the file."""
    name = data.draw(st.sampled_from(sorted(clips)))
    broken = data.draw(damaged(clips[name]))
    with tempfile.TemporaryDirectory() as tmp:
        check_video_file(write_bytes(Path(tmp) / name, broken), random_access=data.draw(st.booleans()))


@settings(max_examples=25)
@given(data=st.data())
def test_wrong_extension(data, clips):
    """A real file under another video extension, and an image under a video extension."""
    name = data.draw(st.sampled_from(sorted(clips) + ["image"]))
    payload = clips[name] if name != "image" else b"\x89PNG\r\n\x1a\n" + bytes(100)
    ext = data.draw(st.sampled_from(VIDEO_EXTENSIONS))
    with tempfile.TemporaryDirectory() as tmp:
        check_video_file(write_bytes(Path(tmp) / f"clip{ext}", payload))


@settings(max_examples=30)
@given(data=st.data())
def test_inspect_damaged_videos(data, clips):
    """``selfvos data inspect`` on a damaged file: a table and exit 0, or one error line and a non-zero exit."""
    name = data.draw(st.sampled_from(sorted(clips)))
    broken = data.draw(damaged(clips[name]))
    with tempfile.TemporaryDirectory() as tmp:
        path = write_bytes(Path(tmp) / name, broken)
        code, out, err = run_cli(["data", "inspect", str(path)])
        assert code != 0 or "total: 1 videos" in out
        if code != 0:
            assert str(path) in err
