"""The fine-tuning recipe end to end on small synthetic multi-object videos: exports, best checkpoint,
validation, training record, exact resume, the CLI and its errors."""
from __future__ import annotations

import dataclasses
import json
import shutil

import torch
from mlflow import MlflowClient
from safetensors.torch import load_file

import selfvos
from selfvos.cli import main
from selfvos.data.supervised import SupervisedClipConfig
from selfvos.finetune.config import EvalConfig, FinetuneConfig
from selfvos.finetune.recipe import run_finetune


def tiny_config(out, max_steps: int = 4, tracking_uri=None, **train) -> FinetuneConfig:
    cfg = FinetuneConfig()
    cfg.model = dataclasses.replace(cfg.model, decoder_dim=16)
    cfg.data = dataclasses.replace(cfg.data, sources=["synthetic:3"], holdout_every=3, clips_per_video=2,
                                   clip=SupervisedClipConfig(size=(48, 64), max_objects=2))
    cfg.eval = EvalConfig(every=2, max_side=64)
    cfg.train = dataclasses.replace(cfg.train, max_steps=max_steps, batch_size=2, output_dir=str(out), save_every=2,
                                    tracking_uri=tracking_uri, cpu_threads=1, **train)
    return cfg


def test_finetune_exports_last_and_best_with_a_training_record(tmp_path):
    out = run_finetune(tiny_config(tmp_path / "run", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"))
    model = selfvos.from_pretrained(out)
    assert model.architecture == "stm" and model.config.decoder_dim == 16
    record = json.loads((out / "training.json").read_text())
    assert record["step"] == 4 and record["init"] == "scratch" and record["validation_videos"] == ["synthetic_0002"]
    best = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
    assert best["metric"] == "J&F" and best["step"] in (2, 4) and 0 <= best["value"] <= 100
    assert selfvos.from_pretrained(tmp_path / "run" / "best").architecture == "stm"
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("selfvos").experiment_id])[0]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/J_F")] == [2, 4]


def test_resumed_finetune_equals_an_uninterrupted_one(tmp_path):
    cfg = tiny_config(tmp_path / "straight", max_steps=4)  # pseudo-video stage at step 0, then clips
    cfg.eval = EvalConfig(every=0, max_side=64)
    run_finetune(cfg)
    # a run killed after its step-2 checkpoint: the same folder without what came later, then the same command
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    for later in ("checkpoints/step_0000004", "model", "best"):
        shutil.rmtree(tmp_path / "resumed" / later)
    run_finetune(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, output_dir=str(tmp_path / "resumed"))))
    straight = load_file(str(tmp_path / "straight" / "model" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "model" / "model.safetensors"))
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_init_from_a_pretrained_checkpoint_is_recorded(tmp_path):
    mug = selfvos.create_model("mug").save_pretrained(tmp_path / "mug")
    cfg = dataclasses.replace(tiny_config(tmp_path / "run", max_steps=1), init=str(mug))
    cfg.eval = EvalConfig(enabled=False)
    record = json.loads((run_finetune(cfg) / "training.json").read_text())
    assert record["init"] == str(mug) and "memory_encoder.backbone: 122 tensors loaded" in record["init_report"]


def test_cli_print_config_and_bad_values(capsys):
    assert main(["finetune", "--config", "recipes/configs/finetune/stm_davis16.yaml", "--init", "scratch",
                 "--print-config", "--train.max_steps", "7"]) == 0
    printed = capsys.readouterr().out
    assert "type: stm" in printed and "max_steps: 7" in printed and "init: null" in printed
    assert main(["finetune", "--print-config", "--model.key_dim", "abc"]) == 2
    assert "model.key_dim" in capsys.readouterr().err
    assert main(["finetune", "--print-config", "--model.type", "nope"]) == 2
    assert "stm" in capsys.readouterr().err
