"""Bad input to the folder evaluator: one clear error naming the file (or a warning where the task says so)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfvos.errors import SelfvosInputError
from selfvos.eval.io import evaluate_folders, read_mask


def _mask(h: int = 12, w: int = 16, fg: bool = True) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    if fg:
        m[3:8, 4:10] = 255
    return m


def _write_seq(root: Path, seq: str, masks: list) -> Path:
    (root / seq).mkdir(parents=True, exist_ok=True)
    for i, m in enumerate(masks):
        Image.fromarray(m).save(root / seq / f"{i:05d}.png")
    return root / seq


@pytest.fixture
def dirs(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    _write_seq(gt, "alpha", [_mask()] * 5)
    _write_seq(pred, "alpha", [_mask()] * 5)
    return gt, pred


def test_clean_input_scores_one(dirs):
    gt, pred = dirs
    assert evaluate_folders(pred, gt, workers=1).mean() == {"J": 1.0, "F": 1.0, "JF": 1.0}


def test_gt_sequence_without_prediction_folder(dirs):
    gt, pred = dirs
    _write_seq(gt, "beta", [_mask()] * 4)
    with pytest.raises(SelfvosInputError, match="beta") as err:
        evaluate_folders(pred, gt)
    assert err.value.path == str(pred / "beta")


def test_predictions_without_gt_warn_and_are_ignored(dirs, caplog):
    gt, pred = dirs
    _write_seq(pred, "stray", [_mask()] * 3)
    with caplog.at_level(logging.WARNING, logger="selfvos.eval.io"):
        result = evaluate_folders(pred, gt, workers=1)
    assert list(result.sequences) == ["alpha"]
    assert any("stray" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_size_mismatch_names_the_prediction(dirs):
    gt, pred = dirs
    Image.fromarray(_mask(10, 16)).save(pred / "alpha" / "00002.png")
    with pytest.raises(SelfvosInputError, match="differs from the ground truth") as err:
        evaluate_folders(pred, gt)
    assert err.value.path == str(pred / "alpha" / "00002.png")


def test_rgb_prediction_is_rejected(dirs):
    gt, pred = dirs
    Image.fromarray(np.stack([_mask()] * 3, axis=-1)).save(pred / "alpha" / "00001.png")
    with pytest.raises(SelfvosInputError, match="RGB") as err:
        evaluate_folders(pred, gt, workers=2)  # raised inside a worker process, re-raised here intact
    assert err.value.path == str(pred / "alpha" / "00001.png")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_png_names_the_file(dirs, damage):
    gt, pred = dirs
    bad = pred / "alpha" / "00003.png"
    data = bad.read_bytes()
    bad.write_bytes(b"not a png at all" if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(SelfvosInputError) as err:
        evaluate_folders(pred, gt, workers=1)
    assert err.value.path == str(bad)
    assert str(err.value).startswith(str(bad) + ": ")


def test_empty_gt_folder_and_empty_gt_sequence(tmp_path, dirs):
    gt, pred = dirs
    (tmp_path / "empty").mkdir()
    with pytest.raises(SelfvosInputError, match="no sequence folders"):
        evaluate_folders(pred, tmp_path / "empty")
    (gt / "hollow").mkdir()
    (pred / "hollow").mkdir()
    with pytest.raises(SelfvosInputError, match="no PNG annotations") as err:
        evaluate_folders(pred, gt)
    assert err.value.path == str(gt / "hollow")


def test_missing_predicted_frame_is_an_error_or_with_missing_as_empty_counts_as_empty(dirs):
    gt, pred = dirs
    (pred / "alpha" / "00002.png").unlink()  # scored frames are 1, 2, 3: one of three is now empty
    with pytest.raises(SelfvosInputError, match="sequence 'alpha': no prediction for frame '00002'") as err:
        evaluate_folders(pred, gt, workers=1)
    assert err.value.path == str(pred / "alpha" / "00002.png")
    result = evaluate_folders(pred, gt, workers=1, missing_as_empty=True)
    np.testing.assert_allclose(result.sequences["alpha"].objects[0].J, [1, 0, 1])
    assert result.mean()["J"] == pytest.approx(2 / 3)
    assert result.missing_frames() == {"alpha": ["00002"]} and result.missing_count == 1


def test_read_mask_decoders_agree_with_pil(tmp_path):
    ids = np.random.default_rng(0).integers(0, 4, size=(9, 11)).astype(np.uint8)
    grey, one_bit, palette = tmp_path / "l.png", tmp_path / "1.png", tmp_path / "p.png"
    Image.fromarray(ids * 60).save(grey)
    Image.fromarray(ids > 1).save(one_bit)
    img = Image.fromarray(ids, mode="P")
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    img.save(palette)
    np.testing.assert_array_equal(read_mask(grey), ids * 60)
    np.testing.assert_array_equal(read_mask(one_bit), (ids > 1).astype(np.uint8))  # 1-bit: ids 0/1
    np.testing.assert_array_equal(read_mask(palette), ids)
