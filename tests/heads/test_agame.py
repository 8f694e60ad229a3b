"""A-GAME's appearance model on hand-made features (closed-form estimate, distractor assignments, online update,
variance floor, diagonal-Gaussian log-likelihood), and the head's recurrence and bounded inference state."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal

import selfvos
from selfvos.finetune.losses import SegmentationLoss
from selfvos.heads.agame import AGAMEInferenceConfig, AGAMEInferenceCore
from selfvos.layers.gmm import GaussianMixtureAppearance, GMMState, diagonal_log_likelihood, weighted_moments

pytestmark = pytest.mark.usefixtures("one_thread")

# three 2-d feature cells (0, 0), (2, 0), (0, 4) as an (N=1, D=2, h=1, w=3) map
X = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 4.0]]).reshape(1, 2, 1, 3)


def identity_gmm(**kwargs) -> GaussianMixtureAppearance:
    gmm = GaussianMixtureAppearance(2, 2, **kwargs)
    with torch.no_grad():
        gmm.project.weight.copy_(torch.eye(2).reshape(2, 2, 1, 1))
        gmm.project.bias.zero_()
    return gmm


def test_weighted_mean_and_variance_by_hand():
    weights = torch.tensor([[1.0, 1.0, 0.0], [0.5, 0.0, 1.0]]).reshape(1, 2, 1, 3)
    floor = torch.tensor([[0.1, 0.2], [0.3, 0.4]])
    est = weighted_moments(X, weights, floor)
    # component 0: cells 1 and 2 -> mean (1, 0), variance ((0-1)^2 + (2-1)^2) / 2 = 1 and 0, plus the floor
    # component 1: 0.5 * (0, 0) + 1 * (0, 4) over 1.5 -> mean (0, 8/3); var_y = (0.5 (8/3)^2 + (4/3)^2) / 1.5 = 32/9
    torch.testing.assert_close(est.mean, torch.tensor([[[1.0, 0.0], [0.0, 8 / 3]]]))
    torch.testing.assert_close(est.var, torch.tensor([[[1.1, 0.2], [0.3, 0.4 + 32 / 9]]]))
    # pseudo-count c: sum_p a x / (c + sum_p a)
    shrunk = weighted_moments(X, weights, floor, prior_count=1.0)
    torch.testing.assert_close(shrunk.mean, torch.tensor([[[2 / 3, 0.0], [0.0, 1.6]]]))
    empty = weighted_moments(X, torch.zeros(1, 2, 1, 3), floor)  # no weight: mean 0, variance = the floor
    torch.testing.assert_close(empty.mean, torch.zeros(1, 2, 2))
    torch.testing.assert_close(empty.var, floor[None])


def test_first_frame_estimate_and_online_update_with_lambda():
    gmm = identity_gmm(distractors=False, update_rate=0.25, prior_count=0.0, floor_init=math.log(math.e - 1))  # r = 1
    assert torch.allclose(gmm.floor, torch.ones(2, 2))
    y0 = torch.tensor([0.0, 0.0, 1.0]).reshape(1, 1, 1, 3)  # cell 3 is the target
    seg0 = torch.cat([1 - y0, y0], dim=1)
    state0 = gmm.update(gmm.project(X), seg0)  # lambda = 1 on the first frame
    torch.testing.assert_close(state0.mean, torch.tensor([[[1.0, 0.0], [0.0, 4.0]]]))
    torch.testing.assert_close(state0.var, torch.tensor([[[2.0, 1.0], [1.0, 1.0]]]))
    x1 = torch.tensor([[4.0, 4.0, 2.0], [2.0, 2.0, 8.0]]).reshape(1, 2, 1, 3)
    y1 = torch.tensor([0.0, 0.5, 1.0]).reshape(1, 1, 1, 3)
    state1 = gmm.update(gmm.project(x1), torch.cat([1 - y1, y1], dim=1), state0)
    # estimate of frame 1: bg weights (1, .5, 0) -> mean (4, 2), var (1, 1); fg weights (0, .5, 1) -> mean (8/3, 6),
    # var (r + (.5 (4/3)^2 + (2/3)^2) / 1.5, r + (.5 * 16 + 4) / 1.5) = (1 + 8/9, 1 + 8)
    mean_est = torch.tensor([[[4.0, 2.0], [8 / 3, 6.0]]])
    var_est = torch.tensor([[[1.0, 1.0], [1 + 8 / 9, 9.0]]])
    torch.testing.assert_close(state1.mean, 0.75 * state0.mean + 0.25 * mean_est)
    torch.testing.assert_close(state1.var, 0.75 * state0.var + 0.25 * var_est)


def test_distractor_components_take_what_the_base_model_gets_wrong():
    gmm = identity_gmm(prior_count=0.0)
    # background at (0, 0) x2 and one background cell (5, 5) next to the target cells (5, 4) and (6, 5)
    x = torch.tensor([[0.0, 0.0, 5.0, 5.0, 6.0], [0.0, 0.0, 5.0, 4.0, 5.0]]).reshape(1, 2, 1, 5)
    y = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0]).reshape(1, 1, 1, 5)
    seg = torch.cat([1 - y, y], dim=1)
    state = gmm.update(x, seg)
    assert state.mean.shape == (1, 4, 2)
    base = weighted_moments(x, seg, gmm.floor[:2])
    # posteriors of the two base components, independently with torch.distributions
    cells = x.flatten(2)[0].T  # (5, 2)
    loglik = torch.stack([Normal(base.mean[0, k], base.var[0, k].sqrt()).log_prob(cells).sum(-1) for k in range(2)])
    posterior = torch.softmax(loglik, dim=0)  # (2, 5)
    alpha = torch.clamp(seg.flatten(2)[0] - posterior, min=0)  # [alpha_2, alpha_3]
    expected = (alpha @ cells) / alpha.sum(-1, keepdim=True)
    torch.testing.assert_close(state.mean[0, 2:], expected.detach())
    assert alpha[0, 2] > 0.5 and torch.allclose(state.mean[0, 2], torch.tensor([5.0, 5.0]), atol=1e-2)  # the distractor


def test_variances_never_fall_below_the_floor():
    torch.manual_seed(0)
    gmm = GaussianMixtureAppearance(6, 4, update_rate=0.3)
    with torch.no_grad():
        gmm.floor_raw.copy_(torch.randn(4, 4))
    x = torch.randn(2, 6, 5, 7)
    state = gmm.update(gmm.project(x), torch.softmax(torch.randn(2, 2, 5, 7), 1))
    for _ in range(5):
        x = torch.randn(2, 6, 5, 7)
        state = gmm.update(gmm.project(x), torch.softmax(torch.randn(2, 2, 5, 7), 1), state)
        assert (state.var >= gmm.floor[None] - 1e-6).all()
    gmm.prior_count = 0.0
    constant = torch.ones(1, 4, 3, 3)  # no spread at all: variance = the floor exactly
    torch.testing.assert_close(gmm.update(constant, torch.full((1, 2, 3, 3), 0.5)).var[0, :2], gmm.floor[:2])


def test_log_likelihood_is_the_diagonal_gaussian():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5)
    state = GMMState(torch.randn(2, 4, 3), torch.rand(2, 4, 3) + 0.1)
    ours = diagonal_log_likelihood(x, state)
    cells = x.flatten(2).transpose(1, 2)  # (N, P, D)
    reference = torch.stack([Normal(state.mean[:, k, None], state.var[:, k, None].sqrt()).log_prob(cells).sum(-1)
                             for k in range(4)], dim=1).reshape(2, 4, 4, 5)
    torch.testing.assert_close(ours, reference)
    gmm = GaussianMixtureAppearance(3, 3)
    torch.testing.assert_close(gmm.log_joint(x, state), reference - math.log(4))
    torch.testing.assert_close(gmm(x, state), torch.log_softmax(reference, dim=1))  # uniform prior cancels


def small_model():
    torch.manual_seed(0)
    return selfvos.create_model("agame", gmm_dim=8, propagation_dim=16, fusion_dim=8)


def test_training_uses_only_the_first_mask_and_pads_objects_out():
    model = small_model().eval()
    b, t, h, w = 2, 4, 64, 96
    masks = torch.zeros(b, t, h, w, dtype=torch.int64)
    masks[:, :, 10:40, 10:50] = 1
    masks[0, :, 40:60, 60:90] = 2
    batch = {"frames": torch.rand(b, t, 3, h, w, generator=torch.Generator().manual_seed(0)), "masks": masks,
             "object_valid": torch.tensor([[True, True], [True, False]])}
    with torch.no_grad():
        out = model(batch)
        later = dict(batch, masks=torch.cat([masks[:, :1], torch.randint(0, 3, masks[:, 1:].shape)], dim=1))
        torch.testing.assert_close(model(later)["logits"], out["logits"])
    assert out["logits"].shape == out["aux_logits"].shape == (b, t - 1, 3, h, w)
    assert torch.softmax(out["logits"][1], dim=1)[:, 2].max() < 1e-6  # item 1's padded object


def test_core_state_does_not_grow_with_the_video():
    model = small_model()
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (12, 40, 56, 3), dtype=np.uint8)
    mask = np.zeros((40, 56), np.uint8)
    mask[5:20, 5:30], mask[22:38, 30:50] = 3, 1
    for update in ("final", "coarse"):
        core = AGAMEInferenceCore(model, AGAMEInferenceConfig(update_with=update, dtype="float32"))
        first = core.step(frames[0], mask)
        assert torch.equal(first.argmax(0), torch.from_numpy(np.select([mask == 1, mask == 3], [1, 2], 0)))
        sizes = [core.state_numel]
        for frame in frames[1:]:
            core.step(frame)
            sizes.append(core.state_numel)
        assert len(set(sizes)) == 1 and sizes[0] > 0, sizes
        # mixture (K=2 objects x 4 components x D=8, mean + var), first features (256 x 3 x 4),
        # first and previous soft masks (K=2 x [bg, fg] x 3 x 4)
        assert sizes[0] == 2 * 4 * 8 * 2 + 256 * 3 * 4 + 2 * 2 * 2 * 3 * 4


@pytest.mark.parametrize("options", [{"update_with": "final"}, {"distractors": False, "appearance_output": "log_joint"},
                                     {"propagate_first_frame": False}])
def test_variants_train_end_to_end(options):
    torch.manual_seed(0)
    model = selfvos.create_model("agame", gmm_dim=8, propagation_dim=16, fusion_dim=8, **options)
    masks = torch.zeros(1, 3, 32, 48, dtype=torch.int64)
    masks[:, :, 4:20, 6:30] = 1
    batch = {"frames": torch.rand(1, 3, 3, 32, 48), "masks": masks, "object_valid": torch.tensor([[True]])}
    SegmentationLoss()(model, batch)["loss"].backward()
    assert model.appearance.floor_raw.grad is not None and model.coarse_predictor.weight.grad.abs().sum() > 0
