"""``selfvos evaluate`` end to end: table, JSON schema, plot, errors."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from selfvos.cli import main
from tests.conftest import shared_path


def test_osvos_prints_official_jf(tmp_path, capsys):
    pred = shared_path("oracle", "osvos-masks")
    gt = shared_path("davis2016-val-dev", "Annotations", "480p")
    out_json, out_png = tmp_path / "scores.json", tmp_path / "plot.png"
    code = main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--json", str(out_json), "--plot", str(out_png)])
    assert code == 0
    out = capsys.readouterr().out
    assert "J&F 0.8120" in out
    assert all(seq in out for seq in ("blackswan", "car-shadow", "dance-twirl", "kite-surf"))
    doc = json.loads(out_json.read_text())
    assert set(doc["sequences"]["blackswan"]) == {"J", "F", "J_recall", "J_decay", "F_recall", "F_decay"}
    assert set(doc["mean"]) == {"J", "F", "JF"} and round(doc["mean"]["JF"], 4) == 0.8120
    assert all(0 <= v <= 1 for seq in doc["sequences"].values() for k, v in seq.items() if "decay" not in k)
    with Image.open(out_png) as img:
        assert img.format == "PNG" and img.width > 300


def test_sequences_and_protocol_options(tmp_path, capsys):
    pred = shared_path("oracle", "osvos-masks")
    gt = shared_path("davis2016-val-dev", "Annotations", "480p")
    out_json = tmp_path / "s.json"
    args = ["evaluate", "--pred", str(pred), "--gt", str(gt), "--sequences", "blackswan", "--json", str(out_json)]
    assert main(args + ["--protocol", "all"]) == 0
    doc = json.loads(out_json.read_text())
    assert list(doc["sequences"]) == ["blackswan"] and doc["protocol"] == "all"
    assert doc["mean"]["J"] != 0.9423003000816731  # two more frames scored than the official protocol


def test_error_is_one_line_naming_the_file(tmp_path, capsys):
    gt, pred = tmp_path / "gt" / "seq", tmp_path / "pred" / "seq"
    gt.mkdir(parents=True)
    pred.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(gt / f"{i:05d}.png")
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(pred / f"{i:05d}.png")
    code = main(["evaluate", "--pred", str(pred.parent), "--gt", str(gt.parent)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and str(pred / "00001.png") in err and "RGB" in err
