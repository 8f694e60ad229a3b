"""Fine-tuning optimisation: SGD with momentum, the poly schedule, backbone groups over several encoders."""
from __future__ import annotations

import pytest
import torch
from tests.engine.engine_toys import make_parts, toy_config
from torch import nn

from selfvos.config import apply_overrides, from_dict, to_dict
from selfvos.engine import Callback, TrainConfig, Trainer, TrainStep, build_optimizer, lr_factor
from selfvos.engine.optim import is_backbone_parameter

KW = dict(total_steps=10, warmup_steps=2, min_lr_ratio=0.1)


@pytest.mark.parametrize(
    "step, power, expected",
    [
        (0, 0.9, 0.5),  # warm-up as for every schedule
        (2, 0.9, 1.0),  # p = 0
        (4, 0.9, 0.1 + 0.9 * 0.75 ** 0.9),  # p = 2 / 8
        (6, 2.0, 0.1 + 0.9 * 0.25),  # p = 1/2, squared
        (10, 0.9, 0.1),  # the floor at the end
        (12, 0.9, 0.1),
    ],
)
def test_poly_factor_matches_formula(step, power, expected):
    assert lr_factor(step, schedule="poly", poly_power=power, **KW) == pytest.approx(expected, abs=1e-12)


class LrLog(Callback):
    def __init__(self) -> None:
        self.lrs = []

    def on_step_end(self, trainer, metrics):
        self.lrs.append(metrics["lr/head/decay"])  # the lr the update just used


def test_sgd_with_poly_schedule_trains_at_the_formula_lrs_with_momentum(tmp_path):
    model, objective, data = make_parts(seed=0)
    cfg = toy_config(tmp_path, optimizer="sgd", momentum=0.8, schedule="poly", poly_power=0.9, max_steps=6,
                     warmup_steps=1, min_lr_ratio=0.05, lr=0.1)
    log = LrLog()
    trainer = Trainer(model, data, cfg, objective=objective, callbacks=[log])
    opt = trainer.optimizer.optimizer
    assert type(opt) is torch.optim.SGD
    assert all(g["momentum"] == 0.8 and g["nesterov"] is False for g in opt.param_groups)
    before = model.head.weight.detach().clone()
    trainer.train()
    expected = [0.1 * lr_factor(s, total_steps=6, warmup_steps=1, schedule="poly", min_lr_ratio=0.05,
                                poly_power=0.9) for s in range(6)]
    assert log.lrs == pytest.approx(expected, rel=1e-12)
    assert expected[0] == pytest.approx(0.1) and expected[-1] == pytest.approx(0.1 * (0.05 + 0.95 * 0.2 ** 0.9))
    assert not torch.equal(model.head.weight, before)
    buffers = [opt.state[p]["momentum_buffer"] for p in model.parameters()]
    assert all(b is not None and b.shape == p.shape for b, p in zip(buffers, model.parameters()))
    assert "exp_avg" not in opt.state[model.head.weight]


def test_adamw_stays_the_default():
    opt = build_optimizer(TrainStep(nn.Linear(2, 2)), TrainConfig())
    assert type(opt) is torch.optim.AdamW and opt.param_groups[0]["betas"] == (0.9, 0.999)


class TwoEncoders(nn.Module):
    """STM-like: a query ``backbone``, ``memory_encoder.backbone`` and the rest (head)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Conv2d(3, 4, 3)
        self.memory_encoder = nn.Module()
        self.memory_encoder.backbone = nn.Conv2d(4, 4, 3)
        self.memory_encoder.project = nn.Conv2d(4, 2, 1)
        self.decoder = nn.Conv2d(4, 1, 1)


def groups_of(cfg: TrainConfig):
    model = TwoEncoders()
    groups = {g["name"]: g for g in build_optimizer(TrainStep(model), cfg).param_groups}
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    return model, groups, ids


def test_both_encoders_train_at_the_backbone_lr():
    model, groups, ids = groups_of(TrainConfig(lr=1.0, backbone_lr_ratio=0.1))
    encoders = [model.backbone, model.memory_encoder.backbone]
    assert ids["backbone/decay"] == {id(m.weight) for m in encoders}
    assert ids["backbone/no_decay"] == {id(m.bias) for m in encoders}
    assert groups["backbone/decay"]["lr"] == groups["backbone/no_decay"]["lr"] == pytest.approx(0.1)
    head = [model.memory_encoder.project, model.decoder]
    assert ids["head/decay"] == {id(m.weight) for m in head} and groups["head/decay"]["lr"] == 1.0


def test_backbone_keys_name_other_modules_and_dotted_paths():
    model, groups, ids = groups_of(TrainConfig(lr=1.0, backbone_lr_ratio=0.5,
                                               backbone_keys=("decoder", "memory_encoder.backbone")))
    assert ids["backbone/decay"] == {id(model.decoder.weight), id(model.memory_encoder.backbone.weight)}
    assert id(model.backbone.weight) in ids["head/decay"]  # the query backbone is not named any more
    assert groups["backbone/decay"]["lr"] == 0.5
    assert is_backbone_parameter("model.a.memory_encoder.backbone.w", ("memory_encoder.backbone",))
    assert not is_backbone_parameter("model.memory_encoder.w", ("memory_encoder.backbone",))
    assert not is_backbone_parameter("model.backbone.w", ())


def test_new_fields_validate_and_round_trip():
    cfg = TrainConfig(optimizer="sgd", schedule="poly", poly_power=2.0, freeze_bn=True, backbone_keys=("a", "b.c"),
                      find_unused_parameters=True, static_graph=True)
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg
    assert apply_overrides(cfg, ["--backbone_keys", "[x, y.z]"]).backbone_keys == ("x", "y.z")
    for bad, field in ((dict(optimizer="adam"), "optimizer"), (dict(momentum=1.0), "momentum"),
                       (dict(poly_power=0.0), "poly_power"), (dict(backbone_keys="backbone"), "backbone_keys"),
                       (dict(backbone_keys=("backbone", "")), "backbone_keys"), (dict(schedule="step"), "schedule")):
        with pytest.raises(ValueError, match=f"train\\.{field}"):
            TrainConfig(**bad)

