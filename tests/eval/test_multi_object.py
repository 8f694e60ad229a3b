"""DAVIS-2017 multi-object rules: objects = first-frame ids, missing objects are empty, void 255 ignored."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfvos.eval.davis import evaluate_sequence
from selfvos.eval.io import evaluate_folders
from tests.conftest import shared_path


def _save_palette(array: np.ndarray, path: Path, palette: list) -> None:
    img = Image.fromarray(array.astype(np.uint8), mode="P")
    img.putpalette(palette)
    img.save(path)


def test_schoolgirls_against_itself_and_with_one_object_removed(tmp_path):
    gt_root = shared_path("davis2017-multi", "Annotations")
    same = evaluate_folders(gt_root, gt_root)
    assert same.multi_object and len(same.objects()) == 7
    assert same.mean() == {"J": 1.0, "F": 1.0, "JF": 1.0}

    removed = 3
    frames = sorted((gt_root / "schoolgirls").glob("*.png"))
    (tmp_path / "schoolgirls").mkdir()
    present = []
    for frame in frames:
        img = Image.open(frame)
        ids = np.array(img)
        present.append(bool((ids == removed).any()))
        _save_palette(np.where(ids == removed, 0, ids), tmp_path / "schoolgirls" / frame.name, img.getpalette())
    result = evaluate_folders(tmp_path, gt_root)
    # object 3 scores 1 (J and F) only on scored frames where it is absent from the GT too, else 0
    expected_obj = 1.0 - float(np.mean(present[1:-1]))
    obj = result.objects()[f"schoolgirls_{removed}"]
    assert obj.J.mean() == pytest.approx(expected_obj) and obj.F.mean() == pytest.approx(expected_obj)
    expected_mean = (6 * 1.0 + expected_obj) / 7
    mean = result.mean()
    assert mean["J"] == pytest.approx(expected_mean) and mean["F"] == pytest.approx(expected_mean)
    assert mean["JF"] == pytest.approx(expected_mean)
    assert expected_mean < 1 - 0.1  # object 3 is visible in most frames: the drop is real


def test_objects_come_from_the_first_frame_and_void_is_ignored():
    gt = np.zeros((3, 6, 6), np.uint8)
    gt[:, 1:3, 1:3] = 1
    gt[1:, 4:, 4:] = 2  # object 2 appears after frame 0: not an object of this sequence
    gt[1, 0, :] = 255  # a void row
    pred = gt.copy()
    pred[1, 0, :] = 1  # prediction of object 1 spilling over the void row: not penalised
    pred[1, 4:, 4:] = 0
    result = evaluate_sequence("toy", ["0", "1", "2"], gt, pred, multi_object=True, protocol="all")
    assert [o.object_id for o in result.objects] == [1]
    np.testing.assert_allclose(result.objects[0].J, [1, 1, 1])
    np.testing.assert_allclose(result.objects[0].F, [1, 1, 1])
    pred[1, 0, :] = 0
    pred[1, 1, 1] = 0  # one of 4 object pixels lost in frame 1
    result = evaluate_sequence("toy", ["0", "1", "2"], gt, pred, multi_object=True, protocol="all")
    np.testing.assert_allclose(result.objects[0].J, [1, 0.75, 1])


def test_missing_object_and_missing_frame_count_as_empty():
    gt = np.zeros((4, 8, 8), np.uint8)
    gt[:, 1:4, 1:4] = 1
    gt[:, 5:7, 5:7] = 2
    pred = [gt[0], gt[1], None, np.where(gt[3] == 2, 0, gt[3])]  # frame 2 missing, object 2 gone in frame 3
    result = evaluate_sequence("toy", list("0123"), gt, pred, multi_object=True, protocol="all")
    j = {o.object_id: o.J for o in result.objects}
    np.testing.assert_allclose(j[1], [1, 1, 0, 1])
    np.testing.assert_allclose(j[2], [1, 1, 0, 0])
    official = evaluate_sequence("toy", list("0123"), gt, pred, multi_object=True, protocol="official")
    assert official.frame_names == ["1", "2"]
    np.testing.assert_allclose(official.objects[1].F, [1, 0])
