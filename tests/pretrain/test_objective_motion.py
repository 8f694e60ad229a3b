"""The SfM-Net and MOREL terms inside the MuG objective: motion heads, switches, gradients, and the losses
falling on a clip with a known moving object."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from selfvos.config import apply_overrides
from selfvos.pretrain import MuGObjective, ObjectiveConfig
from selfvos.pretrain.motion_heads import MotionPredictor
from tests.pretrain.conftest import small_model, tiny_batch
from tests.pretrain.test_objective_flow import with_flow


def only(term: str) -> ObjectiveConfig:
    return ObjectiveConfig(frame=False, tracking=False, matching=False, memory=False, **{term: True})


def test_motion_predictor_pools_inside_each_mask_and_starts_still():
    torch.manual_seed(0)
    head = MotionPredictor(4, 2, (1.0, 1.0), hidden=8)
    f_t, f_t1 = torch.randn(3, 4, 6, 7), torch.randn(3, 4, 6, 7)
    masks = torch.zeros(3, 2, 6, 7)
    masks[:, 0, :3], masks[:, 1, 3:] = 1.0, 1.0
    objects, camera = head(f_t, f_t1, masks)
    assert objects.shape == (3, 2, 2) and camera.shape == (3, 2)
    assert objects.abs().max() == 0 and camera.abs().max() == 0  # zero-initialised outputs: nothing moves
    torch.nn.init.normal_(head.object_out.weight)
    objects, _ = head(f_t, f_t1, masks)
    pooled = head.features(torch.cat([f_t, f_t1], 1))[:, :, :3].mean(dim=(-2, -1))  # object 0 = the top rows
    torch.testing.assert_close(objects[:, 0], head.object_out(pooled))


def test_the_terms_need_the_feature_channels_and_are_config_switches():
    with pytest.raises(ValueError, match="feature_channels"):
        MuGObjective(only("morel"))
    cfg = apply_overrides(ObjectiveConfig(), ["--sfm", "true", "--morel_cfg.sparsity_weight", "0.1"])
    assert cfg.sfm and cfg.morel_cfg.sparsity_weight == 0.1
    objective = MuGObjective(cfg, feature_channels=small_model().feature_channels)
    assert hasattr(objective, "sfm_motion") and not hasattr(objective, "morel_motion")


@pytest.mark.parametrize("term", ["morel", "sfm"])
def test_the_term_falls_on_a_clip_with_a_moving_square(term):
    torch.manual_seed(0)
    model = small_model()
    objective = MuGObjective(only(term), feature_channels=model.feature_channels)
    batch = with_flow(tiny_batch(b=2, t=3, size=64))
    optimizer = torch.optim.Adam([*model.parameters(), *objective.parameters()], lr=1e-3)
    losses = []
    for _ in range(30):
        out = objective(model, batch)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(float(out[term]))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3]), losses
    grad = model.mask_head.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0  # the frame head is taught
    del batch["flow"]
    if term == "sfm":
        with pytest.raises(ValueError, match="batch\\['flow'\\]"):
            objective(model, batch)
