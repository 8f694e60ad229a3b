"""freeze_bn: BatchNorm running statistics never move, even after model.train(); the affine parameters train."""
from __future__ import annotations

import torch
from tests.engine.engine_toys import ToyConfig, make_parts, toy_config

from selfvos.engine import Callback, Trainer


class Toggle(Callback):
    """What a validation pass does between steps: eval mode, then back to train mode."""

    def on_step_end(self, trainer, metrics):
        trainer.module.eval()
        trainer.module.train()


def bn_run(tmp_path, freeze_bn: bool):
    model, objective, data = make_parts(seed=0, config=ToyConfig(norm="batch"))
    bn = model.backbone[1]
    start = {k: v.clone() for k, v in bn.state_dict().items()}
    cfg = toy_config(tmp_path, max_steps=4, freeze_bn=freeze_bn, grad_clip=None)
    trainer = Trainer(model, data, cfg, objective=objective, callbacks=[Toggle()])
    trainer.train(2)
    model.train()  # anyone may call it, at any time
    trainer.train(2)
    return bn, start


def test_frozen_batchnorm_keeps_its_statistics_and_trains_its_affine(tmp_path):
    bn, start = bn_run(tmp_path, freeze_bn=True)
    assert torch.equal(bn.running_mean, start["running_mean"]) and torch.equal(bn.running_var, start["running_var"])
    assert bn.num_batches_tracked.item() == 0
    assert not torch.equal(bn.weight.detach(), start["weight"]) and not torch.equal(bn.bias.detach(), start["bias"])
    bn(torch.rand(2, 8, 4, 4))  # the next forward after a .train() runs in eval mode again
    assert not bn.training
    assert torch.equal(bn.running_mean, start["running_mean"])


def test_without_freeze_bn_the_statistics_move(tmp_path):
    bn, start = bn_run(tmp_path, freeze_bn=False)
    assert not torch.equal(bn.running_mean, start["running_mean"]) and bn.num_batches_tracked.item() == 4
