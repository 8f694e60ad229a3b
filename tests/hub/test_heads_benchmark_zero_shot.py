"""``benchmarks/heads_davis16.py`` for a zero-shot head: its rows say zero-shot-vos, and the label-free zero-shot
pipeline's row is read from ``label_free_davis16.json`` for the same weights (nothing is run)."""
from __future__ import annotations

import json

import selfvos
from selfvos.hub.record import weights_sha256
from tests.hub.test_result_binding import benchmark_script, write
from tests.inference.tiny_zero_shot import ARCH


def test_zero_shot_rows_and_the_label_free_baseline(tmp_path, monkeypatch):
    heads = benchmark_script("heads_davis16")
    assert heads.head_task(ARCH) == "zero-shot" and heads.head_task("stm") == "one-shot"
    mine = selfvos.create_model(ARCH).save_pretrained(tmp_path / "mine")
    monkeypatch.setitem(heads.CONFIGS, ARCH, heads.REPO / "recipes" / "configs" / "finetune" / "x_davis16.yaml")
    scores = {"J&F": 61.0, "J": 62.0, "F": 60.0, "frames_per_s": 4.0, "per_sequence_JF": {"blackswan": 61.0}}
    row = heads.head_row(ARCH, mine, {"init": None, "step": 2}, {"step": 2, "value": 50.0}, scores, 854)
    assert row["task"] == "zero-shot-vos" and row["max_side"] == 854 and row["weights_sha256"] == weights_sha256(mine)

    mug = selfvos.create_model(ARCH).save_pretrained(tmp_path / "mug")  # any checkpoint: only its SHA-256 matters
    label_free = write(tmp_path / "label_free.json", {"results": {
        "MuG | val-dev | zero-shot": {**scores, "J&F": 59.5, "weights_sha256": weights_sha256(mug)},
        "MuG | train | zero-shot": {**scores, "J&F": 1.0, "weights_sha256": weights_sha256(mug)},
        "Other | val-dev | zero-shot": {**scores, "J&F": 2.0, "weights_sha256": "0" * 64}}})
    monkeypatch.setattr(heads, "LABEL_FREE", label_free)
    monkeypatch.setattr(heads, "REPO", tmp_path)
    baseline = heads.label_free_row(str(mug), collection=None, out=tmp_path / "unused")
    assert baseline["J&F"] == 59.5 and baseline["task"] == "zero-shot-vos"
    assert baseline["source"] == "label_free.json: MuG | val-dev | zero-shot"
    assert json.loads(label_free.read_text())  # untouched
