"""Source registry and ``open_source`` dispatch: NAME:PATH specs, bare-path auto-detection, options."""
from __future__ import annotations

import json
import shutil

import av
import numpy as np
import pytest
from PIL import Image

from selfvos.data.sources import detect_source, open_source, parse_spec
from selfvos.errors import SelfvosInputError
from selfvos.registry import SOURCES
from tests.conftest import shared_path


def _mp4(path, n=6):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=5)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((24, 32, 3), 20 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_builtin_sources_are_registered():
    names = SOURCES.names()
    for name in ("davis", "youtube-vos", "video", "frames"):
        assert name in names
    from selfvos.data.sources import open_davis

    assert SOURCES.get("davis") is open_davis


def test_auto_detection_on_real_data():
    assert detect_source(shared_path("davis2016-val-dev")) == "davis"
    assert detect_source(shared_path("davis2017-multi")) == "davis"
    assert detect_source(shared_path("videos")) == "video"
    assert detect_source(shared_path("videos", "dog.mp4")) == "video"
    assert detect_source(shared_path("davis2016-train-240p", "JPEGImages")) == "frames"
    assert detect_source(shared_path("davis2016-train-240p", "JPEGImages", "bear")) == "frames"


def test_auto_detection_on_generated_folders(tmp_path):
    (tmp_path / "yt" / "JPEGImages").mkdir(parents=True)
    (tmp_path / "yt" / "meta.json").write_text(json.dumps({"videos": {}}))
    assert detect_source(tmp_path / "yt") == "youtube-vos"
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "state.json").write_text("{}")
    assert detect_source(tmp_path / "ds") == "hf"
    (tmp_path / "empty").mkdir()
    with pytest.raises(SelfvosInputError, match="empty folder"):
        detect_source(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SelfvosInputError, match=r"notes\.txt: not a video file"):
        detect_source(tmp_path / "notes.txt")
    with pytest.raises(SelfvosInputError, match="no such file or folder"):
        open_source(tmp_path / "missing")


def test_spec_parsing():
    assert parse_spec("davis:/data/DAVIS") == ("davis", "/data/DAVIS")
    assert parse_spec("video:clip.mp4") == ("video", "clip.mp4")
    assert parse_spec("synthetic") == ("synthetic", None)
    assert parse_spec("synthetic:4") == ("synthetic", 4)


def test_named_specs_and_options_pass_through(tmp_path):
    davis = open_source(f"davis:{shared_path('davis2016-val-dev')}", sequences=["kite-surf"])
    assert davis.kind == "davis" and davis.names == ["kite-surf"]
    dog = open_source(str(shared_path("videos", "dog.mp4")), max_side=320, frame_stride=10)[0]
    assert len(dog) == 29 and dog.frame(0).shape == (180, 320, 3)
    frames = open_source(f"frames:{shared_path('davis2017-multi', 'JPEGImages', 'schoolgirls')}")
    assert frames.kind == "frames" and len(frames[0]) == 80 and not frames[0].has_masks
    with pytest.raises(SelfvosInputError, match="option not supported by source 'frames'"):
        open_source(f"frames:{shared_path('davis2017-multi', 'JPEGImages')}", frame_stride=2)
    with pytest.raises(SelfvosInputError, match="source 'davis' needs a location"):
        open_source("davis")
    small = open_source(f"frames:{shared_path('davis2017-multi', 'JPEGImages')}", max_side=216)
    assert small[0].frame(0).shape == (120, 216, 3)


def test_generated_youtube_vos_and_video_folder(tmp_path):
    src = shared_path("davis2017-multi")
    (tmp_path / "yt" / "JPEGImages" / "v").mkdir(parents=True)
    (tmp_path / "yt" / "Annotations" / "v").mkdir(parents=True)
    for i in range(6):
        shutil.copy(src / f"JPEGImages/schoolgirls/{i:05d}.jpg", tmp_path / f"yt/JPEGImages/v/{i:05d}.jpg")
    shutil.copy(src / "Annotations/schoolgirls/00005.png", tmp_path / "yt/Annotations/v/00005.png")
    (tmp_path / "yt" / "meta.json").write_text(json.dumps({"videos": {"v": {"objects": {}}}}))
    ytvos = open_source(tmp_path / "yt")
    assert ytvos.kind == "youtube-vos" and ytvos["v"].annotated_indices() == [5]
    (tmp_path / "clips").mkdir()
    _mp4(tmp_path / "clips" / "one.mp4")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "clips" / "poster.jpg")  # images win: frames
    assert detect_source(tmp_path / "clips") == "frames"
    (tmp_path / "clips" / "poster.jpg").unlink()
    clips = open_source(tmp_path / "clips")
    assert clips.kind == "video" and clips.names == ["one"] and len(clips["one"]) == 6


def test_synthetic_specs():
    if "synthetic" not in SOURCES:
        pytest.skip("selfvos.data.synthetic is not there yet")
    assert len(open_source("synthetic:3")) == 3
    assert open_source("synthetic", num_videos=2, num_frames=5)[1].load().frames.shape[0] == 5
