"""Co-attention matching: the regression target IS the applied warp, round-trip known answers, learning."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from kornia.geometry.transform import get_affine_matrix2d, warp_affine

from selfvos.pretrain.matching import (CoAttentionMatching, MatchingConfig, normalized_affine, round_trip_loss,
                                       sample_affine, warp_normalized)

from .conftest import backbone_grad_ok, small_model, tiny_batch


def textured(b=2, size=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.avg_pool2d(torch.rand(b, 3, size, size, generator=g), 3, 1, 1)


def test_target_reproduces_kornia_warp_affine_exactly():
    images = textured()
    pixel = sample_affine(2, (48, 48), MatchingConfig(max_rotation=30, max_scale=0.2, max_translation=0.2))
    target = normalized_affine(pixel, (48, 48))[:, :2]
    ours = warp_normalized(images, target, (48, 48))
    theirs = warp_affine(images, pixel[:, :2], dsize=(48, 48), align_corners=True)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_known_parameters_in_normalised_coordinates():
    size = (48, 64)  # H, W
    center = torch.tensor([[(64 - 1) / 2, (48 - 1) / 2]])
    pure_shift = get_affine_matrix2d(torch.tensor([[6.3, -4.7]]), center, torch.ones(1, 2), torch.zeros(1))
    target = normalized_affine(pure_shift, size)[0, :2]
    expected = torch.tensor([[1.0, 0.0, 2 * 6.3 / 63], [0.0, 1.0, 2 * -4.7 / 47]])
    torch.testing.assert_close(target, expected, atol=1e-6, rtol=0)
    # rotation about the centre of a square image, scale 1.1: s * [[cos, -sin], [sin, cos]] in (x, y), unchanged
    # by normalisation because the image is square and the centre maps to the origin
    rot = get_affine_matrix2d(torch.zeros(1, 2), torch.tensor([[23.5, 23.5]]), torch.full((1, 2), 1.1), torch.tensor([20.0]))
    theta = normalized_affine(rot, (48, 48))[0, :2]
    c, s = 1.1 * math.cos(math.radians(20)), 1.1 * math.sin(math.radians(20))
    torch.testing.assert_close(theta, torch.tensor([[c, -s, 0.0], [s, c, 0.0]]), atol=1e-5, rtol=0)


def test_warp_is_resolution_free():
    """T is in normalised coordinates: rendering X_j' at 24 px equals rendering at 48 px then resizing."""
    images = textured(size=48)
    target = normalized_affine(sample_affine(2, (48, 48), MatchingConfig()), (48, 48))[:, :2]
    small = warp_normalized(images, target, (24, 24))
    large = warp_normalized(images, target, (47, 47))  # pixel centres of 24 px sit on every 2nd of 47 px
    torch.testing.assert_close(small, large[..., ::2, ::2], atol=1e-5, rtol=0)


def test_round_trip_known_answers():
    n = 6
    uniform = torch.zeros(1, n, 10)
    assert math.isclose(round_trip_loss(uniform).item(), math.log(n), rel_tol=1e-5)
    assert math.isclose(round_trip_loss(torch.zeros(1, 10, n)).item(), math.log(n), rel_tol=1e-5)
    sharp = torch.full((1, n, n), -30.0) + 60.0 * torch.eye(n)
    assert round_trip_loss(sharp).item() < 1e-6


def test_objective_outputs_and_gradients(model, batch):
    feats, ref_feats = model.encode(batch["frames"]), model.encode(batch["refs"])
    out = CoAttentionMatching()(model, batch["frames"], feats, batch["refs"], ref_feats)
    assert set(out) == {"loss", "transform", "consistency"} and all(v.dim() == 0 for v in out.values())
    assert out["transform"] > 0 and out["consistency"] > 0
    out["loss"].backward()
    assert backbone_grad_ok(model)
    assert model.coattention_weight.grad.abs().sum() > 0 and model.regressor.fc.weight.grad.abs().sum() > 0
    # without references the pair comes from two frames of the clip
    model.zero_grad()
    CoAttentionMatching()(model, batch["frames"], feats.detach())["loss"].backward()
    assert model.regressor.fc.weight.grad.abs().sum() > 0


def test_transform_loss_falls_on_a_fixed_warp_set():
    torch.manual_seed(0)
    model = small_model()
    images = tiny_batch(b=4, t=1, r=1, size=64)["frames"][:, 0]
    cfg = MatchingConfig(max_rotation=20, max_scale=0.15, max_translation=0.2, warp_size=64)
    target = normalized_affine(sample_affine(4, (64, 64), cfg, generator=torch.Generator().manual_seed(1)), (64, 64))[:, :2]
    warped = warp_normalized(images, target, (64, 64))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(25):
        x = model.embed(model.encode(torch.cat([images, warped])))
        loss = F.mse_loss(model.regress_transform(x[:4], x[4:]), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses
