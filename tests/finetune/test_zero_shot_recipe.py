"""The fine-tuning recipe with a zero-shot head: the head class sets binary clips with flows, training runs and
the held-out videos are validated zero-shot (single object)."""
from __future__ import annotations

import dataclasses
import json

import pytest

import selfvos
from selfvos.config import apply_overrides, to_dict
from selfvos.data.sources import open_source
from selfvos.data.supervised import SupervisedClipConfig
from selfvos.finetune.config import EvalConfig, FinetuneConfig, head_task
from selfvos.finetune.recipe import run_finetune
from selfvos.finetune.validation import segmentation_scores
from tests.inference.tiny_zero_shot import ARCH

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_zero_shot_head_sets_its_clip_options():
    cfg = apply_overrides(FinetuneConfig(), ["--model.type", ARCH, "--data.clip.binary", "false"])
    assert head_task(cfg.model) == "zero-shot" and cfg.data.clip.binary and cfg.data.clip.flow
    assert to_dict(cfg)["data"]["clip"]["binary"] is True  # what --print-config and training.json show
    stm = FinetuneConfig()
    assert head_task(stm.model) == "one-shot" and not stm.data.clip.binary and not stm.data.clip.flow


def test_zero_shot_scores_of_a_head():
    videos = open_source("synthetic", num_videos=1, num_frames=4, size=(40, 56), min_objects=2, seed=3)
    model = selfvos.create_model(ARCH).eval()
    scores = segmentation_scores(model, videos, "zero-shot", max_side=32)
    assert set(scores) == {"J&F", "J", "F"} and all(0 <= v <= 100 for v in scores.values())
    with pytest.raises(ValueError, match="task"):
        segmentation_scores(model, videos, "two-shot")


def test_two_step_finetune_of_a_zero_shot_head(tmp_path):
    cfg = FinetuneConfig()
    cfg.model = selfvos.create_model(ARCH).config  # assigned after creation: the recipe still sets the clip options
    cfg.data = dataclasses.replace(cfg.data, sources=["synthetic:3"], holdout_every=3, clips_per_video=2,
                                   clip=SupervisedClipConfig(num_frames=3, size=(40, 56), max_objects=1),
                                   pseudo_video_fraction=0.0, curriculum=None)
    cfg.eval = EvalConfig(every=2, max_side=48)
    cfg.train = dataclasses.replace(cfg.train, max_steps=2, batch_size=2, output_dir=str(tmp_path / "run"),
                                    save_every=2, cpu_threads=1, warmup_steps=0)
    out = run_finetune(cfg)
    model = selfvos.from_pretrained(out)
    assert model.architecture == ARCH
    record = json.loads((out / "training.json").read_text())
    assert record["step"] == 2 and record["config"]["data"]["clip"]["binary"] is True
    assert record["config"]["data"]["clip"]["flow"] is True
    best = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
    assert best["metric"] == "J&F" and best["step"] == 2 and 0 <= best["value"] <= 100
