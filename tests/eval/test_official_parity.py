"""Every number of ``oracle/davis16-dev-official.json`` (official DAVIS code on davis2016-val-dev) to 1e-6,
for its three predictors; skips when ../shared/data is absent."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfvos.eval.io import evaluate_folders
from selfvos.eval.report import to_dict
from tests.conftest import shared_path

KEYS = ("J", "F", "J_recall", "J_decay", "F_recall", "F_decay")


@pytest.fixture(scope="module")
def oracle() -> dict:
    return json.loads(shared_path("oracle", "davis16-dev-official.json").read_text())


@pytest.fixture(scope="module")
def gt_root() -> Path:
    return shared_path("davis2016-val-dev", "Annotations", "480p")


def _assert_matches(doc: dict, expected: dict) -> None:
    sequences = sorted(k for k in expected if not k.startswith("_"))
    assert sorted(doc["sequences"]) == sequences
    for seq in sequences:
        for key in KEYS:
            assert doc["sequences"][seq][key] == pytest.approx(expected[seq][key], abs=1e-6), (seq, key)
    for key in ("J", "F", "JF"):
        assert doc["mean"][key] == pytest.approx(expected["_mean"][key], abs=1e-6), key


def _ellipse(height: int, width: int) -> np.ndarray:
    """The oracle's ``center_ellipse_50pct``: ((x-cx)/a)^2 + ((y-cy)/b)^2 <= 1, cx=(W-1)/2, a=W/4, ..."""
    yy, xx = np.mgrid[:height, :width].astype(np.float64)
    cx, cy, a, b = (width - 1) / 2, (height - 1) / 2, width / 4, height / 4
    return (((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 <= 1).astype(np.uint8) * 255


def test_osvos_published(oracle, gt_root):
    result = evaluate_folders(shared_path("oracle", "osvos-masks"), gt_root)
    assert not result.multi_object  # grayscale 0/255 GT: binary, > 0 is foreground
    _assert_matches(to_dict(result), oracle["osvos_published"])


def test_copy_first_frame_gt(oracle, gt_root, tmp_path):
    for seq_dir in sorted(p for p in gt_root.iterdir() if p.is_dir()):
        frames = sorted(seq_dir.glob("*.png"))
        (tmp_path / seq_dir.name).mkdir()
        for frame in frames:  # links: the same bytes as a copy, without the disk traffic
            os.symlink(frames[0], tmp_path / seq_dir.name / frame.name)
    _assert_matches(to_dict(evaluate_folders(tmp_path, gt_root)), oracle["copy_first_frame_gt"])


def test_center_ellipse(oracle, gt_root, tmp_path):
    for seq_dir in sorted(p for p in gt_root.iterdir() if p.is_dir()):
        frames = sorted(seq_dir.glob("*.png"))
        width, height = Image.open(frames[0]).size
        (tmp_path / seq_dir.name).mkdir()
        master = tmp_path / f"{seq_dir.name}.png"
        Image.fromarray(_ellipse(height, width)).save(master)
        for frame in frames:
            os.symlink(master, tmp_path / seq_dir.name / frame.name)
    result = evaluate_folders(tmp_path, gt_root, workers=1)  # the in-process path gives the same numbers
    _assert_matches(to_dict(result), oracle["center_ellipse_50pct"])
