"""A video file with a corrupt middle: ``verify()`` and ``selfvos data inspect`` report it as damaged, naming the
file and the frame where decoding failed; the intact file passes."""
from __future__ import annotations

import re
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from selfvos.cli import main
from selfvos.data.frames import open_frames
from selfvos.data.video_file import VideoFileVideo
from selfvos.errors import SelfvosInputError

FRAMES = 60


def write_mp4(path: Path, n: int = FRAMES) -> Path:
    """A 64x48 H.264 mp4 of a moving bar on noise (index at the end of the file)."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(n):
            image = rng.integers(0, 30, (48, 64, 3), dtype=np.uint8)
            image[:, i % 60:i % 60 + 4] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def corrupt_middle(path: Path, length: int = 500) -> Path:
    """Overwrite ``length`` bytes in the middle of the file (inside the frame data) with fixed noise."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + length] = np.random.default_rng(1).integers(0, 256, length, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """(intact mp4, the same mp4 with a corrupt middle)."""
    folder = tmp_path_factory.mktemp("videos")
    good = write_mp4(folder / "good.mp4")
    bad = corrupt_middle(write_mp4(folder / "bad.mp4"))
    return good, bad


def failing_frame(message: str) -> int:
    return int(re.search(r"decoding failed at frame (\d+) \(at [\d.]+ s\) of 60", message).group(1))


def test_verify_names_the_frame_where_decoding_failed(videos):
    good, bad = videos
    VideoFileVideo(good).verify()
    video = VideoFileVideo(bad)
    assert len(video) == FRAMES  # the header is intact: opening it does not notice
    with pytest.raises(SelfvosInputError, match=r"bad\.mp4: damaged video: decoding failed at frame") as err:
        video.verify()
    assert err.value.path == str(bad) and 0 < failing_frame(err.value.problem) < FRAMES


def test_verify_reports_a_stream_that_ends_early(videos, tmp_path, monkeypatch):
    good, _ = videos
    video = VideoFileVideo(good)
    monkeypatch.setattr(video, "_raw_count", FRAMES + 5)
    with pytest.raises(SelfvosInputError, match=r"the stream ends after 60 of 65 frames \(at 6.00 s"):
        video.verify()


def test_inspect_exits_non_zero_for_a_corrupt_middle(videos, capsys):
    good, bad = videos
    assert main(["data", "inspect", str(good)]) == 0
    assert "good  " in capsys.readouterr().out
    assert main(["data", "inspect", str(bad)]) != 0
    captured = capsys.readouterr()
    assert re.search(r"^bad\s+60\s+damaged", captured.out, re.MULTILINE)
    line = captured.err.strip().splitlines()[-1]
    assert re.match(r"^selfvos( data)?: error: ", line) and str(bad) in line and 0 < failing_frame(line) < FRAMES
    assert main(["data", "inspect", str(bad), "--quick"]) == 0  # frame 0 alone is fine


def test_inspect_lists_every_damaged_video_of_a_folder(videos, tmp_path, capsys):
    good, bad = videos
    for name, source in (("a.mp4", bad), ("b.mp4", good), ("c.mp4", bad)):
        (tmp_path / name).write_bytes(source.read_bytes())
    assert main(["data", "inspect", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert err.count("damaged: ") == 2 and "a.mp4" in err and "c.mp4" in err and "1 more damaged video" in err


def test_inspect_reports_frames_of_mixed_sizes_and_corrupt_images(tmp_path, capsys):
    for i, size in enumerate([(16, 20), (16, 20), (12, 20)]):
        Image.fromarray(np.zeros(size + (3,), np.uint8)).save(tmp_path / f"{i:05d}.png")
    with pytest.raises(SelfvosInputError, match=r"00002\.png: frame is 20x12 \(WxH\) but the video's first frame "
                                                 r"00000\.png is 20x16"):
        open_frames(tmp_path)[0].verify()
    assert main(["data", "inspect", str(tmp_path)]) != 0
    assert "00002.png: frame is 20x12" in capsys.readouterr().err
    (tmp_path / "00002.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert main(["data", "inspect", str(tmp_path)]) != 0
    assert "00002.png: not a readable image" in capsys.readouterr().err
