"""``selfvos evaluate`` never scores a missing, extra or misnamed prediction as an empty mask: as the official
DAVIS code it stops with one error naming the sequence and the frame (exit 2), unless ``--missing-as-empty``
asks for missing frames to be scored empty, which is then counted in a warning and in the JSON."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from selfvos.cli import main
from selfvos.errors import SelfvosInputError
from selfvos.eval.io import evaluate_folders

N = 5  # frames per sequence


def _mask(h: int = 12, w: int = 16) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[3:8, 4:10] = 255
    return m


@pytest.fixture
def dirs(tmp_path):
    """gt/<seq>/0000k.png and identical predictions for sequences alpha and beta."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for root in (gt, pred):
        for seq in ("alpha", "beta"):
            (root / seq).mkdir(parents=True)
            for i in range(N):
                Image.fromarray(_mask()).save(root / seq / f"{i:05d}.png")
    return gt, pred


def evaluate(capsys, gt, pred, *extra) -> tuple:
    code = main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--workers", "1", *map(str, extra)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(err: str, *fragments: str) -> str:
    """The single ``selfvos: error:`` line ending stderr, without a traceback, holding ``fragments``."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("selfvos: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def test_complete_predictions_score_one(dirs, capsys):
    gt, pred = dirs
    (pred / "alpha" / ".DS_Store").write_bytes(b"hidden files are not predictions")
    code, out, err = evaluate(capsys, gt, pred)
    assert code == 0 and "J&F 1.0000" in out and err == ""


@pytest.mark.parametrize("frame", ["00002", "00000", "00004"])  # scored, and first/last (unscored but required)
def test_missing_frame_names_sequence_and_frame(dirs, capsys, frame):
    gt, pred = dirs
    (pred / "beta" / f"{frame}.png").unlink()
    code, out, err = evaluate(capsys, gt, pred)
    assert code == 2 and out == ""
    error_line(err, str(pred / "beta" / f"{frame}.png"), f"sequence 'beta': no prediction for frame '{frame}'",
               "--missing-as-empty")


def test_sequence_saved_as_jpg(dirs, capsys):
    gt, pred = dirs
    for png in (pred / "alpha").glob("*.png"):
        Image.open(png).convert("L").save(png.with_suffix(".jpg"))
        png.unlink()
    code, _, err = evaluate(capsys, gt, pred)
    assert code == 2
    error_line(err, str(pred / "alpha" / "00000.jpg"), "sequence 'alpha'", "not a ground-truth frame name",
               "00000.png .. 00004.png", "5 frame(s) have no prediction")


@pytest.mark.parametrize("wrong, right", [("0.png", "00000.png"), ("00002.PNG", "00002.png"),
                                          ("frame_00003.png", "00003.png")])
def test_misnamed_frame(dirs, capsys, wrong, right):
    gt, pred = dirs
    (pred / "alpha" / right).rename(pred / "alpha" / wrong)
    code, _, err = evaluate(capsys, gt, pred, "--missing-as-empty")  # misnamed is never "missing"
    assert code == 2
    error_line(err, str(pred / "alpha" / wrong), "sequence 'alpha'", f"e.g. {right}")


@pytest.mark.parametrize("extra", ["00005.png", "notes.txt", "00001.jpg"])
def test_extra_file(dirs, capsys, extra):
    gt, pred = dirs
    (pred / "beta" / extra).write_bytes((pred / "beta" / "00001.png").read_bytes())
    code, _, err = evaluate(capsys, gt, pred)
    assert code == 2
    error_line(err, str(pred / "beta" / extra), "is not a ground-truth frame name")


def test_missing_sequence_folder(dirs, capsys, tmp_path):
    gt, pred = dirs
    for png in (pred / "beta").iterdir():
        png.unlink()
    (pred / "beta").rmdir()
    code, _, err = evaluate(capsys, gt, pred)
    assert code == 2
    error_line(err, str(pred / "beta"), "no prediction folder for ground-truth sequence 'beta'")
    out_json = tmp_path / "scores.json"
    code, out, err = evaluate(capsys, gt, pred, "--missing-as-empty", "--json", out_json)
    assert code == 0 and "J&F 0.5000" in out
    assert "selfvos: warning: 5 frame(s) without a prediction" in err
    doc = json.loads(out_json.read_text())
    assert doc["missing_frames"] == {"count": 5, "sequences": {"beta": [f"{i:05d}" for i in range(N)]}}


def test_a_prediction_that_is_a_file_not_a_folder(dirs, capsys):
    gt, pred = dirs
    for png in (pred / "beta").iterdir():
        png.unlink()
    (pred / "beta").rmdir()
    (pred / "beta").write_text("oops")
    code, _, err = evaluate(capsys, gt, pred, "--missing-as-empty")
    assert code == 2
    error_line(err, str(pred / "beta"), "is not a folder")


@pytest.mark.parametrize("frame", ["00000", "00002"])  # unscored first frame: checked from its header
def test_frame_of_the_wrong_size(dirs, capsys, frame):
    gt, pred = dirs
    Image.fromarray(_mask(10, 16)).save(pred / "alpha" / f"{frame}.png")
    code, _, err = evaluate(capsys, gt, pred)
    assert code == 2
    error_line(err, str(pred / "alpha" / f"{frame}.png"), "size 16x10 differs from the ground truth 16x12")


def test_rgb_first_frame_is_rejected_though_unscored(dirs, capsys):
    gt, pred = dirs
    Image.fromarray(np.stack([_mask()] * 3, -1)).save(pred / "alpha" / "00000.png")
    code, _, err = evaluate(capsys, gt, pred)
    assert code == 2
    error_line(err, str(pred / "alpha" / "00000.png"), "RGB")


def test_missing_as_empty_counts_warns_and_records(dirs, capsys, tmp_path):
    gt, pred = dirs
    for frame in ("00001", "00002", "00004"):
        (pred / "alpha" / f"{frame}.png").unlink()
    out_json = tmp_path / "scores.json"
    code, _, err = evaluate(capsys, gt, pred, "--missing-as-empty", "--json", out_json)
    assert code == 0
    assert err.strip() == ("selfvos: warning: 3 frame(s) without a prediction scored as empty masks "
                           "(--missing-as-empty) in 1 sequence(s): alpha 3")
    doc = json.loads(out_json.read_text())
    assert doc["missing_as_empty"] is True
    assert doc["missing_frames"] == {"count": 3, "sequences": {"alpha": ["00001", "00002", "00004"]}}
    assert doc["sequences"]["alpha"]["J"] == pytest.approx(1 / 3)  # frames 1, 2 empty; 3 right
    assert doc["sequences"]["beta"]["J"] == 1.0


def test_json_records_no_missing_frames_for_a_complete_run(dirs, capsys, tmp_path):
    gt, pred = dirs
    out_json = tmp_path / "scores.json"
    assert evaluate(capsys, gt, pred, "--json", out_json)[0] == 0
    doc = json.loads(out_json.read_text())
    assert doc["missing_as_empty"] is False and doc["missing_frames"] == {"count": 0, "sequences": {}}


def test_missing_frame_error_survives_worker_processes(dirs):
    gt, pred = dirs
    (pred / "alpha" / "00003.png").unlink()
    with pytest.raises(SelfvosInputError, match="no prediction for frame '00003'") as err:
        evaluate_folders(pred, gt, workers=2)
    assert err.value.path == str(pred / "alpha" / "00003.png")


@pytest.mark.parametrize("case", ["json is a folder", "json in a missing folder", "json below a file",
                                  "plot is a folder"])
def test_output_options_are_checked_before_scoring(dirs, capsys, tmp_path, monkeypatch, case):
    import selfvos.eval.io as eval_io

    gt, pred = dirs
    option, target = ("--plot", tmp_path) if case == "plot is a folder" else ("--json", tmp_path)
    if case == "json in a missing folder":
        target = tmp_path / "nope" / "scores.json"
    elif case == "json below a file":
        (tmp_path / "file").write_text("x")
        target = tmp_path / "file" / "scores.json"
    scored = []
    monkeypatch.setattr(eval_io, "evaluate_folders", lambda *a, **k: scored.append(a))
    code, out, err = evaluate(capsys, gt, pred, option, target)
    assert code == 2 and out == "" and scored == []
    error_line(err, str(target), option)


def test_workers_must_be_positive(dirs, capsys):
    gt, pred = dirs
    code, _, err = evaluate(capsys, gt, pred, "--workers", "0")
    assert code == 2
    assert err.strip().splitlines()[-1] == "selfvos: error: --workers: must be >= 1, got '0'"


def test_full_disk_while_writing_the_json_names_it(dirs, capsys, tmp_path, monkeypatch):
    import errno
    import os

    gt, pred = dirs
    out_json = tmp_path / "scores.json"
    out_json.write_text("{}")

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    code, _, err = evaluate(capsys, gt, pred, "--json", out_json)
    assert code == 1
    error_line(err, f"selfvos: error: {out_json}: no space left on device")
    assert out_json.read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["gt", "pred", "scores.json"]

