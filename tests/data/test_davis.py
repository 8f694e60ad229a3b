"""DAVIS reader on the real data (480p 0/255 grayscale, flat 240p palette, 7-object DAVIS-2017) and on
generated layouts (ImageSets splits, sparse annotations)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from selfvos.data.davis import detect_resolution, open_davis
from selfvos.errors import SelfvosInputError
from tests.conftest import shared_path


def test_val_dev_480p_grayscale_masks_become_ids_0_1():
    root = shared_path("davis2016-val-dev")
    davis = open_davis(root)
    assert detect_resolution(root) == "480p"
    assert davis.names == ["blackswan", "car-shadow", "dance-twirl", "kite-surf"]
    assert [len(v) for v in davis] == [50, 40, 90, 50]
    video = davis["blackswan"]
    assert video.fps == 24.0 and video.frame_names[:2] == ["00000", "00001"]
    frame, mask = video.frame(10), video.mask(10)
    assert frame.shape == (480, 854, 3) and frame.dtype == np.uint8
    raw = np.array(Image.open(root / "Annotations/480p/blackswan/00010.png"))
    assert set(np.unique(raw)) == {0, 255}
    np.testing.assert_array_equal(mask, (raw > 0).astype(np.uint8))
    np.testing.assert_array_equal(frame, np.array(Image.open(root / "JPEGImages/480p/blackswan/00010.jpg")))


def test_max_side_shrinks_frames_by_area_and_masks_by_nearest():
    root = shared_path("davis2016-val-dev")
    full, small = open_davis(root)["kite-surf"], open_davis(root, max_side=427)["kite-surf"]
    frame, mask = small.frame(7), small.mask(7)
    assert frame.shape == (240, 427, 3) and mask.shape == (240, 427)
    expected = cv2.resize(full.frame(7), (427, 240), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(frame, expected)
    np.testing.assert_array_equal(mask, full.mask(7)[::2, ::2])  # exact 2x: nearest keeps every other pixel
    assert set(np.unique(mask).tolist()) == {0, 1}


def test_train_240p_flat_layout_all_sequences():
    root = shared_path("davis2016-train-240p")
    davis = open_davis(root)
    assert detect_resolution(root) is None
    assert len(davis) == 30 and sum(len(v) for v in davis) == 2079
    bear = davis["bear"]
    assert bear.annotated_indices() == list(range(len(bear)))
    raw = np.array(Image.open(root / "Annotations/bear/00005.png"))
    np.testing.assert_array_equal(bear.mask(5), raw)
    assert set(np.unique(bear.mask(5))) == {0, 1}
    assert bear.frame(5).shape == (240, 427, 3)


def test_davis2017_multi_object_ids_preserved_and_binary_option():
    root = shared_path("davis2017-multi")
    video = open_davis(root)["schoolgirls"]
    assert len(video) == 80
    assert sorted(np.unique(video.mask(0)).tolist()) == list(range(8))
    np.testing.assert_array_equal(video.mask(40), np.array(Image.open(root / "Annotations/schoolgirls/00040.png")))
    binary = open_davis(root, binary=True)["schoolgirls"]
    np.testing.assert_array_equal(binary.mask(0), (video.mask(0) > 0).astype(np.uint8))
    sample = video.load([0, 79])
    assert sample.masks.shape == (2, 240, 432) and sample.annotated.all()
    assert sample.object_ids == list(range(1, 8))


def test_sequences_option_keeps_order_and_rejects_unknown_names():
    root = shared_path("davis2016-val-dev")
    assert open_davis(root, sequences=["kite-surf", "blackswan"]).names == ["kite-surf", "blackswan"]
    with pytest.raises(SelfvosInputError, match="no sequence"):
        open_davis(root, sequences=["bear"])


def _write_sequence(root: Path, res: str, name: str, n: int, annotated=None, palette_ids=(0, 1, 2)) -> None:
    frames, masks = root / "JPEGImages" / res / name, root / "Annotations" / res / name
    frames.mkdir(parents=True)
    masks.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(frames / f"{i:05d}.jpg")
        if annotated is None or i in annotated:
            ids = np.zeros((12, 16), np.uint8)
            ids[:, : 4 * (i % 4 + 1)] = palette_ids[i % len(palette_ids)]
            ids[0, 0] = 255
            png = Image.fromarray(ids, mode="P")
            png.putpalette([v for k in range(256) for v in (k, 255 - k, k // 2)])
            png.save(masks / f"{i:05d}.png")


def test_image_sets_split_2017_names_and_2016_paths(tmp_path):
    for name in ("a", "b", "c"):
        _write_sequence(tmp_path, "480p", name, 3)
    (tmp_path / "ImageSets" / "2017").mkdir(parents=True)
    (tmp_path / "ImageSets" / "2017" / "val.txt").write_text("c\na\n")
    assert open_davis(tmp_path, split="val").names == ["c", "a"]
    (tmp_path / "ImageSets" / "480p").mkdir(parents=True)
    lines = "".join(f"/JPEGImages/480p/b/{i:05d}.jpg /Annotations/480p/b/{i:05d}.png\n" for i in range(3))
    (tmp_path / "ImageSets" / "480p" / "train.txt").write_text(lines)
    assert open_davis(tmp_path, split="train").names == ["b"]
    with pytest.raises(SelfvosInputError, match="no list file for split 'test'"):
        open_davis(tmp_path, split="test")


def test_sparse_annotations_palette_ids_void_and_binary(tmp_path):
    _write_sequence(tmp_path, "Full-Resolution", "seq", 6, annotated={0, 2, 4})
    video = open_davis(tmp_path)["seq"]
    assert video.annotated_indices() == [0, 2, 4]
    assert video.mask(1) is None
    mask = video.mask(2)  # id 2 over the first 12 columns, void at (0, 0)
    assert mask[0, 0] == 255 and set(np.unique(mask).tolist()) == {0, 2, 255}
    assert (mask[1:, :12] == 2).all() and (mask[:, 12:] == 0).all()
    sample = video.load()
    assert sample.annotated.tolist() == [True, False, True, False, True, False]
    assert (sample.masks[1] == 0).all()
    binary = open_davis(tmp_path, binary=True)["seq"].mask(2)
    np.testing.assert_array_equal(binary, np.where(mask == 255, 255, mask > 0).astype(np.uint8))
