"""Validation of a VIS head (``training_task`` "vis"): YouTube-VIS AP of the head tracking the held-out ground truth
(shuffled, box-jittered, seeded), the same records whatever the split over processes, generic code free of any
head module, and the fine-tuning recipe choosing its best checkpoint on "AP"."""
from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import selfvos
from selfvos.data.sources import open_source
from selfvos.data.supervised import SupervisedClipConfig
from selfvos.engine.distributed import shard_range
from selfvos.eval.vis import davis_to_vis, evaluate_vis
from selfvos.finetune.config import FinetuneConfig
from selfvos.finetune.recipe import run_finetune
from selfvos.finetune.validation import (
    segmentation_scores,
    validation_metric,
    vis_instances,
    vis_scores,
    vis_video_records,
)

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = {"feature_dim": 8, "hidden": 16, "embed_dim": 8}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def collection():
    """3 synthetic videos of 2-3 objects, 8 frames at 48x64."""
    return open_source("synthetic", num_videos=3, num_frames=8, size=(48, 64), min_objects=2, max_objects=3, seed=1)


def test_ground_truth_instances_are_shuffled_jittered_and_seeded(collection):
    video = collection[0]
    frame = video.frame(3)
    first, again, other = vis_instances(video, 0)(frame, 3), vis_instances(video, 0)(frame, 3), \
        vis_instances(video, 1)(frame, 3)
    assert np.array_equal(first.masks, again.masks) and np.array_equal(first.boxes, again.boxes)
    assert not np.array_equal(first.boxes, other.boxes)
    truth = [int(v) for v in np.unique(video.mask(3)) if v not in (0, 255)]
    assert sorted(int(video.mask(3)[m][0]) for m in first.masks) == truth and np.all(first.scores == 1)


def test_records_do_not_depend_on_the_split_and_ap_is_over_all_videos(collection):
    torch.manual_seed(0)
    model = selfvos.create_model("masktrack", **SMALL).eval()
    alone = vis_video_records(model, collection, range(3), max_side=48)
    split = [item for rank in range(2) for item in vis_video_records(model, collection, shard_range(3, rank, 2),
                                                                      max_side=48)]
    assert [index for index, _ in alone] == [0, 1, 2] and split == alone
    assert [{r["video_id"] for r in records} for _, records in alone] == [{1}, {2}, {3}]
    scores = vis_scores(model, collection, max_side=48)
    expected = evaluate_vis(davis_to_vis(collection), [r for _, records in alone for r in records]).stats
    assert scores == {name: 100 * expected[name] for name in ("AP", "AP50", "AP75", "AR1", "AR10")}
    assert 0 <= scores["AP"] <= 100 and segmentation_scores(model, collection, "vis", max_side=48) == scores
    assert validation_metric("vis") == "AP" and validation_metric("one-shot") == validation_metric("zero-shot") == "J&F"


def test_a_model_without_the_vis_task_is_a_clear_error(collection):
    from selfvos.errors import SelfvosInputError

    with pytest.raises(SelfvosInputError, match="needs a VIS head"):
        vis_scores(selfvos.create_model("stm", decoder_dim=16), collection, max_side=48)


def test_generic_validation_imports_no_head_module():
    for path in ("selfvos/finetune/validation.py", "selfvos/inference/vis.py"):
        tree = ast.parse((REPO / path).read_text())
        modules = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        modules += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
        assert modules and not [m for m in modules if m.startswith("selfvos.heads")], (path, modules)


def test_recipe_validates_a_vis_head_by_ap_and_saves_the_best(tmp_path):
    from selfvos.config import load_yaml

    cfg = load_yaml(FinetuneConfig, str(REPO / "recipes/configs/finetune/masktrack_davis17.yaml"))
    cfg.model = dataclasses.replace(cfg.model, **SMALL)
    # synthetic:4, every 2nd held out: synthetic_0001 (1 object) and synthetic_0003 (3 objects)
    cfg.data = dataclasses.replace(cfg.data, sources=["synthetic:4"], holdout_every=2, clips_per_video=2,
                                   clip=SupervisedClipConfig(size=(48, 64), max_objects=2))
    cfg.eval = dataclasses.replace(cfg.eval, every=2, max_side=48)
    cfg.train = dataclasses.replace(cfg.train, max_steps=2, batch_size=2, output_dir=str(tmp_path / "run"),
                                    save_every=2, cpu_threads=1, tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    model = selfvos.from_pretrained(run_finetune(cfg))
    assert model.architecture == "masktrack" and model.config.feature_dim == 8
    best = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
    assert best["metric"] == "AP" and best["step"] == 2 and 0 <= best["value"] <= 100
    assert set(best["metrics"]) == {"AP", "AP50", "AP75", "AR1", "AR10"}
    held = [v for i, v in enumerate(open_source("synthetic:4")) if i % 2 == 1]
    assert max(len(np.unique(v.mask(0))) - 1 for v in held) > 1  # a multi-object video is validated
    record = json.loads((tmp_path / "run" / "best" / "training.json").read_text())
    assert record["validation_videos"] == ["synthetic_0001", "synthetic_0003"]
