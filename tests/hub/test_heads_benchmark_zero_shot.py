"""``benchmarks/heads_davis16.py`` for zero-shot heads and recipes: rows say zero-shot-vos, the label-free zero-shot
pipeline's row is read from ``label_free_davis16.json`` for the same weights, ``--recipe`` names runs and rows and
gives the task, and zero-shot instance ids are scored with any instance as the foreground (no training)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import selfvos
from selfvos.errors import SelfvosInputError
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


def test_recipes_name_the_runs_and_rows_and_give_the_task(tmp_path):
    heads = benchmark_script("heads_davis16")
    measured = json.loads((heads.OUT).read_text())["rows"] if heads.OUT.is_file() else {}
    existing = sorted({row["head"] for row in measured.values() if "heldout_train_JF" in row} | {"stm", "rvos"})
    for head in existing:  # the default recipe of a head: the names and task of the rows measured so far
        recipe = heads.resolve_recipe(head, None)
        assert (recipe.name, recipe.head, recipe.path) == (head, head, heads.CONFIGS[head])
        assert recipe.task == heads.head_task(head)
        assert heads.run_dir("runs", recipe.name, "runs/mug/model") == Path(f"runs/finetune_{head}_mug")
        assert heads.run_dir("runs", recipe.name, "scratch") == Path(f"runs/finetune_{head}_scratch")
    assert heads.resolve_recipe(None, None).name == "stm"
    zero = heads.resolve_recipe(None, "rvos_zs_davis17")
    assert zero == heads.resolve_recipe("rvos", "rvos_zs_davis17")
    assert (zero.name, zero.head, zero.task) == ("rvos_zs_davis17", "rvos", "zero-shot")
    assert heads.run_dir("r", zero.name, "scratch") == Path("r/finetune_rvos_zs_davis17_scratch")
    assert heads.resolve_recipe("rvos", "rvos_davis16").task == "one-shot"
    mine = selfvos.create_model("rvos", mode="zero_shot", max_instances=2).save_pretrained(tmp_path / "mine")
    row = heads.head_row("rvos", mine, {"init": None, "step": 2}, {"step": 2, "value": 50.0}, {"J&F": 1.0}, 320, zero)
    assert row["task"] == "zero-shot-vos" and row["config"] == "recipes/configs/finetune/rvos_zs_davis17.yaml"
    with pytest.raises(SelfvosInputError, match="trains 'rvos', not 'stm'"):
        heads.resolve_recipe("stm", "rvos_zs_davis17")
    for bad in ("nope", "../finetune/stm_davis16"):
        with pytest.raises(SelfvosInputError, match="no recipe"):
            heads.main(["--recipe", bad])  # refused before any data is read


def davis16_folder(root: Path, palette: bool) -> Path:
    """A synthetic DAVIS-2016-style folder: one 5-frame video, every object of the ground truth one foreground,
    written as 0 / 255 grayscale PNGs (DAVIS-2016) or as palette id 1."""
    from PIL import Image

    from selfvos.data.sources import open_source
    from selfvos.data.writers import export_davis, save_palette_png

    export_davis(open_source("synthetic", num_videos=1, num_frames=5, size=(48, 64), seed=5), root)
    for png in (root / "Annotations" / "480p").rglob("*.png"):
        foreground = np.asarray(Image.open(png)) > 0
        if palette:
            save_palette_png(png, foreground.astype(np.uint8))
        else:
            Image.fromarray((foreground * 255).astype(np.uint8), mode="L").save(png)
    return root


def test_zero_shot_instances_are_scored_davis2016_style_any_instance_is_the_foreground(tmp_path, monkeypatch):
    from selfvos.data.sources import open_source
    from selfvos.eval.davis import evaluate_sequence
    from selfvos.inference import Segmenter

    heads = benchmark_script("heads_davis16")
    torch.manual_seed(0)
    model = selfvos.create_model("rvos", mode="zero_shot", max_instances=3, skip_dim=8, hidden=(8, 8, 8, 8)).eval()
    with torch.no_grad():  # no slot stops: every frame holds instances 1..3 (whichever win the pixels)
        model.decoder.stop.weight.zero_()
        model.decoder.stop.bias.fill_(-5.0)
    scored = {}
    for palette in (False, True):
        root = davis16_folder(tmp_path / f"davis_{palette}", palette)
        monkeypatch.setattr(heads, "VAL_DEV", root)
        (video,) = open_source(f"davis:{root}")
        scored[palette] = heads.score(model, [video], tmp_path / f"out_{palette}", "zero-shot", max_side=64)
    ids = list(Segmenter(model, "zero-shot", max_side=64).segment_video(video, progress=False))
    assert len({int(i) for m in ids for i in np.unique(m) if i}) >= 2  # several instances to merge
    gt = [(video.mask(t) > 0).astype(np.uint8) for t in range(len(video))]

    def j(pred):
        return 100 * float(evaluate_sequence(video.name, video.frame_names, gt, pred, False).objects[0].J.mean())

    any_instance, first_slot = j([(m > 0).astype(np.uint8) for m in ids]), j([(m == 1).astype(np.uint8) for m in ids])
    assert abs(any_instance - first_slot) > 1.0  # the protocols differ on this video
    for palette in (False, True):  # whatever the ground-truth PNG format
        assert scored[palette]["J"] == pytest.approx(any_instance, abs=1e-6)
