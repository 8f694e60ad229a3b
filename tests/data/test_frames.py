"""Image-folder reader: natural sort, one folder = one video, folder of folders = a collection, real frames."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from selfvos.data.frames import check_no_gaps, natural_key, open_frames
from selfvos.data.image_io import read_mask, read_rgb
from selfvos.errors import SelfvosInputError
from tests.conftest import shared_path


def _noise(seed: int, shape=(10, 14, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)


def _smooth(seed: int) -> np.ndarray:
    """A smooth colour ramp (JPEG keeps it within a few grey levels)."""
    y, x = np.mgrid[0:16, 0:24]
    return np.stack([x * 10 + 20 * seed, y * 12, (x + y) * 5 + 30 * seed], axis=-1).clip(0, 255).astype(np.uint8)


def test_natural_sort_and_lossless_png_roundtrip(tmp_path):
    for i in (10, 2, 1, 0, 3, 4, 5, 6, 7, 8, 9):
        Image.fromarray(_noise(i)).save(tmp_path / f"frame{i}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    videos = open_frames(tmp_path)
    assert len(videos) == 1
    video = videos[0]
    assert video.name == tmp_path.name and video.frame_names == [f"frame{i}" for i in range(11)]
    for i in (0, 2, 10):
        np.testing.assert_array_equal(video.frame(i), _noise(i))
    assert not video.has_masks and video.mask(0) is None
    assert sorted(["f10", "f9", "F1"], key=natural_key) == ["F1", "f9", "f10"]


def test_folder_of_folders_mixed_extensions_and_modes(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    for i in range(3):
        Image.fromarray(_smooth(i)).save(tmp_path / "a" / f"{i:03d}.jpeg", quality=95)
        Image.fromarray(_noise(i)[..., 0]).save(tmp_path / "b" / f"{i:03d}.png")  # grayscale frames
    videos = open_frames(tmp_path)
    assert videos.names == ["a", "b"] and videos.kind == "frames"
    gray = videos["b"].frame(1)
    assert gray.shape == (10, 14, 3)
    np.testing.assert_array_equal(gray, np.repeat(_noise(1)[..., :1], 3, axis=2))
    jpeg = videos["a"].frame(2)
    assert np.abs(jpeg.astype(int) - _smooth(2)).mean() < 4  # lossy but the same picture
    assert np.abs(jpeg.astype(int) - _smooth(1)).mean() > 10
    assert open_frames(tmp_path, sequences=["b"]).names == ["b"]


def test_real_davis_frames_as_image_folders():
    root = shared_path("davis2016-train-240p", "JPEGImages")
    videos = open_frames(root)
    assert len(videos) == 30 and sum(len(v) for v in videos) == 2079
    bear = open_frames(root / "bear")[0]
    np.testing.assert_array_equal(bear.frame(3), np.array(Image.open(root / "bear" / "00003.jpg")))
    assert bear.load([0, 1]).frames.shape == (2, 240, 427, 3)


def test_gap_detection_rules(tmp_path):
    check_no_gaps(tmp_path, ["00000", "00005", "00010"])  # constant step: fine
    check_no_gaps(tmp_path, ["a", "b", "c"])  # not numbered: not checked
    with pytest.raises(SelfvosInputError, match="missing frame '00010'"):
        check_no_gaps(tmp_path, ["00000", "00005", "00015", "00020"])
    with pytest.raises(SelfvosInputError, match="missing frame 'img_0002'"):
        check_no_gaps(tmp_path, ["img_0000", "img_0001", "img_0003"])
    for i in (0, 1, 3):
        Image.fromarray(_noise(i)).save(tmp_path / f"{i:05d}.png")
    assert len(open_frames(tmp_path, check_gaps=False)[0]) == 3


def test_image_io_mask_modes(tmp_path):
    gray = np.array([[0, 255], [255, 0]], np.uint8)
    Image.fromarray(gray, mode="L").save(tmp_path / "davis16.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "davis16.png"), gray // 255)
    ids = np.array([[0, 3], [7, 255]], np.uint8)
    Image.fromarray(ids, mode="L").save(tmp_path / "ids.png")  # grayscale ids other than {0, 255}: kept
    np.testing.assert_array_equal(read_mask(tmp_path / "ids.png"), ids)
    palette = Image.fromarray(ids, mode="P")
    palette.putpalette([v for k in range(256) for v in (k, k, 255 - k)])  # a full palette keeps 8-bit indices
    palette.save(tmp_path / "palette.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "palette.png"), ids)
    np.testing.assert_array_equal(read_mask(tmp_path / "palette.png", binary=True), [[0, 1], [1, 255]])
    Image.fromarray(_noise(0, (4, 4, 4)), mode="RGBA").save(tmp_path / "rgba.png")
    assert read_rgb(tmp_path / "rgba.png").shape == (4, 4, 3)
