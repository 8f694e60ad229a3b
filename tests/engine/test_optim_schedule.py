"""Parameter groups, LR schedule values against the formula, and TrainConfig validation/round trip."""
from __future__ import annotations

import math

import pytest
import torch
from tests.engine.engine_toys import ToyConfig, ToyModel, ToyObjective
from torch import nn

from selfvos.config import apply_overrides, from_dict, to_dict
from selfvos.engine import TrainConfig, TrainStep, build_optimizer, build_scheduler, lr_factor, parameter_groups
from selfvos.engine.config import resolve_mixed_precision, resolve_tracking_uri
from selfvos.engine.optim import is_backbone_parameter

KW = dict(total_steps=10, warmup_steps=2, min_lr_ratio=0.1)


@pytest.mark.parametrize(
    "schedule, step, expected",
    [
        ("cosine", 0, 0.5),  # warm-up (s + 1) / W
        ("cosine", 1, 1.0),
        ("cosine", 2, 1.0),  # decay starts at p = 0
        ("cosine", 4, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.25))),  # 0.868198
        ("cosine", 6, 0.55),  # half way: (1 + m) / 2
        ("cosine", 10, 0.1),
        ("cosine", 15, 0.1),  # clamped after the end
        ("linear", 4, 0.775),
        ("linear", 6, 0.55),
        ("linear", 10, 0.1),
        ("constant", 0, 0.5),
        ("constant", 9, 1.0),
    ],
)
def test_lr_factor_matches_formula(schedule, step, expected):
    assert lr_factor(step, schedule=schedule, **KW) == pytest.approx(expected, abs=1e-9)


def test_lr_factor_without_warmup_starts_at_full_lr():
    assert lr_factor(0, total_steps=4, warmup_steps=0, schedule="cosine", min_lr_ratio=0.0) == 1.0
    assert lr_factor(2, total_steps=4, warmup_steps=0, schedule="cosine", min_lr_ratio=0.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor(0, total_steps=4, warmup_steps=0, schedule="step", min_lr_ratio=0.0)


def test_scheduler_drives_group_lrs_with_backbone_ratio():
    cfg = TrainConfig(lr=0.1, backbone_lr_ratio=0.1, warmup_steps=2, max_steps=10, min_lr_ratio=0.1)
    module = TrainStep(ToyModel(), ToyObjective())
    optimizer = build_optimizer(module, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    seen = []
    for _ in range(7):
        seen.append({g["name"]: g["lr"] for g in optimizer.param_groups})
        optimizer.step()
        scheduler.step()
    factors = [0.5, 1.0, 1.0, 0.1 + 0.45 * (1 + math.cos(math.pi / 8)), 0.1 + 0.45 * (1 + math.cos(math.pi / 4))]
    for lrs, f in zip(seen, factors):
        assert lrs["head/decay"] == pytest.approx(0.1 * f)
        assert lrs["head/no_decay"] == pytest.approx(0.1 * f)
        assert lrs["backbone/decay"] == pytest.approx(0.01 * f)
    assert seen[6]["head/decay"] == pytest.approx(0.055)


def test_parameter_groups_split_backbone_and_no_decay():
    module = TrainStep(ToyModel(ToyConfig(width=4)), ToyObjective())
    module.model.head.bias.requires_grad_(False)  # frozen parameters are left out
    groups = {g["name"]: g for g in parameter_groups(module, lr=1.0, weight_decay=0.3, backbone_lr_ratio=0.25)}
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    bb = module.model.backbone
    assert ids["backbone/decay"] == {id(bb[0].weight)}
    assert ids["backbone/no_decay"] == {id(bb[0].bias), id(bb[1].weight), id(bb[1].bias)}
    assert ids["head/decay"] == {id(module.model.head.weight)}
    assert ids["head/no_decay"] == {id(module.objective.logit_scale)}
    assert groups["backbone/decay"]["lr"] == 0.25 and groups["head/decay"]["lr"] == 1.0
    assert groups["backbone/decay"]["weight_decay"] == 0.3 and groups["backbone/no_decay"]["weight_decay"] == 0.0
    assert groups["head/no_decay"]["weight_decay"] == 0.0
    with pytest.raises(ValueError, match="no trainable parameters"):
        parameter_groups(nn.Linear(2, 2).requires_grad_(False), lr=1.0, weight_decay=0.0)


def test_backbone_is_matched_by_module_name_not_substring():
    assert is_backbone_parameter("model.backbone.0.weight")
    assert not is_backbone_parameter("model.backbone_proj.weight")
    assert not is_backbone_parameter("backbone")  # a parameter called backbone is not inside one


def test_train_config_round_trip_and_validation(tmp_path):
    cfg = TrainConfig(betas=(0.8, 0.99), resume=None, grad_clip=None)
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg
    assert apply_overrides(cfg, ["--max_steps", "5", "--schedule=linear"]).max_steps == 5
    for bad in (dict(schedule="step"), dict(mixed_precision="fp8"), dict(max_steps=0), dict(min_lr_ratio=2.0),
                dict(grad_clip=0.0), dict(save_every=-1)):
        with pytest.raises(ValueError, match="train\\."):
            TrainConfig(**bad)


def test_resolved_precision_and_tracking_uri(tmp_path, monkeypatch):
    if not torch.cuda.is_available():
        assert resolve_mixed_precision("auto") == "no"
    assert resolve_mixed_precision("bf16") == "bf16"
    assert resolve_tracking_uri(None, str(tmp_path)) is None
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri("auto", str(tmp_path)) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere.db")
    assert resolve_tracking_uri("auto", str(tmp_path)) == "sqlite:////elsewhere.db"
