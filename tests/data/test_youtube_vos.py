"""YouTube-VOS reader on a small YouTube-VOS-shaped folder built from real DAVIS-2017 frames and masks."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfvos.data.youtube_vos import open_youtube_vos
from selfvos.errors import SelfvosInputError
from tests.conftest import shared_path

N_FRAMES = 16


def _build(tmp_path: Path, step: int = 1) -> Path:
    """``vid_a``: 16 real schoolgirls frames, palette masks every 5th frame, objects 1..7 in meta.json;
    ``vid_b``: the same frames without annotations. ``step`` = numbering step of the frame names."""
    src = shared_path("davis2017-multi")
    root = tmp_path / "ytvos"
    for vid in ("vid_a", "vid_b"):
        (root / "JPEGImages" / vid).mkdir(parents=True)
        for i in range(N_FRAMES):
            shutil.copy(src / f"JPEGImages/schoolgirls/{i:05d}.jpg", root / f"JPEGImages/{vid}/{i * step:05d}.jpg")
    (root / "Annotations" / "vid_a").mkdir(parents=True)
    annotated = list(range(0, N_FRAMES, 5))
    for i in annotated:
        shutil.copy(src / f"Annotations/schoolgirls/{i:05d}.png", root / f"Annotations/vid_a/{i * step:05d}.png")
    objects = {str(k): {"category": "person", "frames": [f"{i * step:05d}" for i in annotated]} for k in range(1, 8)}
    objects["3"]["frames"] = objects["3"]["frames"][1:]  # object 3 "appears" at the second annotated frame
    meta = {"videos": {"vid_a": {"objects": objects}, "vid_b": {"objects": {}}}}
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def test_sparse_annotations_and_meta(tmp_path):
    root = _build(tmp_path)
    ytvos = open_youtube_vos(root)
    assert ytvos.kind == "youtube-vos" and ytvos.names == ["vid_a", "vid_b"]
    video = ytvos["vid_a"]
    assert len(video) == N_FRAMES
    assert video.annotated_indices() == [0, 5, 10, 15]
    assert video.mask(3) is None
    src = shared_path("davis2017-multi")
    np.testing.assert_array_equal(video.mask(10), np.array(Image.open(src / "Annotations/schoolgirls/00010.png")))
    np.testing.assert_array_equal(video.frame(7), np.array(Image.open(src / "JPEGImages/schoolgirls/00007.jpg")))
    assert video.meta["objects"][1]["category"] == "person"
    assert video.meta["first_frame"][1] == 0 and video.meta["first_frame"][3] == 5
    sample = video.load(range(0, 11))
    assert sample.annotated.tolist() == [i in (0, 5, 10) for i in range(11)]
    assert sample.object_ids == list(range(1, 8))
    assert not ytvos["vid_b"].has_masks and ytvos["vid_b"].annotated_indices() == []


def test_six_fps_numbering_step_5_is_not_a_gap(tmp_path):
    root = _build(tmp_path, step=5)
    video = open_youtube_vos(root, sequences=["vid_a"])["vid_a"]
    assert video.frame_names[:3] == ["00000", "00005", "00010"]
    assert video.annotated_indices() == [0, 5, 10, 15]
    assert video.meta["first_frame"][3] == 5


def test_binary_option_and_missing_meta(tmp_path):
    root = _build(tmp_path)
    (root / "meta.json").unlink()
    video = open_youtube_vos(root, binary=True)["vid_a"]
    assert set(np.unique(video.mask(0)).tolist()) == {0, 1}
    assert video.meta == {"objects": {}, "first_frame": {}}


def test_meta_errors_name_the_file(tmp_path):
    root = _build(tmp_path)
    meta = json.loads((root / "meta.json").read_text())
    meta["videos"]["vid_a"]["objects"]["1"]["frames"].append("00099")
    (root / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(SelfvosInputError, match=r"meta\.json: video 'vid_a' object 1 lists frame '00099'"):
        open_youtube_vos(root)
    meta["videos"] = {"vid_zz": {"objects": {}}}
    (root / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(SelfvosInputError, match="lists video 'vid_zz' that has no folder"):
        open_youtube_vos(root)
    (root / "meta.json").write_text("{not json")
    with pytest.raises(SelfvosInputError, match=r"meta\.json: not valid JSON"):
        open_youtube_vos(root)
