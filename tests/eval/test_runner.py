"""selfvos.eval.runner: what the benchmark scripts share (model loading, segment + score, tables)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import selfvos.inference
from selfvos.data.sources import open_source
from selfvos.errors import SelfvosInputError
from selfvos.eval.runner import choose_splits, load_model, print_columns, print_table, run_variant, wanted
from selfvos.inference.io import write_masks


@pytest.fixture()
def videos_and_gt(tmp_path):
    collection = open_source("synthetic", num_videos=2, num_frames=6, size=(48, 64))
    for video in collection:
        write_masks(tmp_path / "gt" / video.name, video.frame_names, [video.mask(t) for t in range(len(video))])
    return collection, tmp_path / "gt"


class OracleSegmenter:
    """Stands in for selfvos.inference.Segmenter: records its arguments and returns the true masks."""

    calls: list = []

    def __init__(self, model, task, **settings):
        self.task = task
        OracleSegmenter.calls.append((model, task, settings))

    def segment_video(self, video, first_mask=None, progress=True):
        assert (first_mask is None) == (self.task == "zero-shot")
        for t in range(len(video)):
            yield video.mask(t)


def test_run_variant_builds_a_segmenter_with_the_given_settings(videos_and_gt, tmp_path, monkeypatch):
    collection, gt = videos_and_gt
    monkeypatch.setattr(selfvos.inference, "Segmenter", OracleSegmenter)
    OracleSegmenter.calls = []
    model = object()
    for task in ("zero-shot", "one-shot"):
        scores = run_variant(model, collection, task, tmp_path / task, gt_dir=gt, head={"memory_every": 5})
        assert scores["J&F"] == pytest.approx(100) and scores["J"] == pytest.approx(100)
        assert set(scores["per_sequence_JF"]) == set(collection.names)
        assert scores["frames_per_s"] > 0
    assert [(m, t, s) for m, t, s in OracleSegmenter.calls] == [
        (model, task, {"head": {"memory_every": 5}}) for task in ("zero-shot",) * 2 + ("one-shot",) * 2]


def test_a_whole_video_method_is_scored_from_its_masks(videos_and_gt, tmp_path):
    collection, gt = videos_and_gt
    seen = []

    def oracle(video):
        seen.append(video.name)
        return [video.mask(t) for t in range(len(video))]

    scores = run_variant(None, collection, oracle, tmp_path / "method", gt_dir=gt)
    assert seen == collection.names and scores["J&F"] == pytest.approx(100) and scores["frames_per_s"] > 0
    empty = run_variant(None, collection, lambda v: [np.zeros_like(v.mask(0))] * len(v), tmp_path / "e", gt_dir=gt)
    assert empty["J"] < 10


def test_first_frame_copy_floor(videos_and_gt, tmp_path):
    collection, gt = videos_and_gt
    scores = run_variant(None, collection, "copy", tmp_path / "copy", gt_dir=gt)
    assert scores["frames_per_s"] is None
    assert 0 < scores["J&F"] < 100  # the objects move, so the first mask is wrong later on
    per_sequence = np.mean(list(scores["per_sequence_JF"].values()))
    assert per_sequence == pytest.approx(scores["J&F"], abs=15)


def tiny_mug():
    from selfvos.backbones import BackboneConfig
    from selfvos.pretrain import MuGConfig, MuGModel

    torch.manual_seed(0)
    return MuGModel(MuGConfig(backbone=BackboneConfig(name="resnet18", output_stride=8, return_layers=("layer3",)),
                              embed_dim=32, key_dim=16, value_dim=32, regressor_grid=4, regressor_channels=32))


def test_load_model_reads_exported_folders_and_training_checkpoints(tmp_path):
    from selfvos.pretrain.recipe import PretrainConfig

    model = tiny_mug()
    exported = model.save_pretrained(tmp_path / "run" / "model")
    step = tmp_path / "run" / "checkpoints" / "step_0000004"
    step.mkdir(parents=True)
    trained = {f"model.{k}": v.clone().contiguous() + 1 for k, v in model.state_dict().items() if v.is_floating_point()}
    trained.update({f"model.{k}": v.clone() for k, v in model.state_dict().items() if not v.is_floating_point()})
    save_file({**trained, "objective.scale": torch.ones(1)}, str(step / "model.safetensors"))

    assert torch.equal(load_model(exported).backbone.conv1.weight, model.backbone.conv1.weight)
    loaded = load_model(step)  # the model config comes from the run's exported model
    assert not loaded.training
    assert torch.equal(loaded.backbone.conv1.weight, model.backbone.conv1.weight + 1)
    config = PretrainConfig()
    config.model = model.config
    assert torch.equal(load_model(step, config).backbone.conv1.weight, model.backbone.conv1.weight + 1)
    (exported / "config.json").unlink()
    with pytest.raises(SelfvosInputError, match="config"):
        load_model(step)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SelfvosInputError, match="neither"):
        load_model(tmp_path / "empty")


def test_tables_and_only(capsys):
    assert wanted("zero-shot offline", "") and wanted("zero-shot offline", "one,offline")
    assert not wanted("zero-shot offline", "one-shot")
    row = {"J&F": 50.0, "J": 40.0, "F": 60.0, "frames_per_s": None, "per_sequence_JF": {}}
    print_table({"copy": row})
    print_columns({"model a": {"zero-shot": row}}, ["zero-shot"], "model")
    out = capsys.readouterr().out
    assert "copy" in out and "50.0" in out and " -" in out and "model a" in out


def test_choose_splits_names_unknown_splits_and_skips_missing_data(tmp_path, capsys):
    available = {"train": (tmp_path, "x"), "val-dev": (tmp_path / "absent", "y")}
    assert choose_splits("train", available) == ["train"]
    assert choose_splits("train,val-dev", available) is None
    err = capsys.readouterr().err
    assert err.startswith("skipped:") and str(tmp_path / "absent") in err
    with pytest.raises(SystemExit, match="unknown \\['test'\\]"):
        choose_splits("train,test", available)
