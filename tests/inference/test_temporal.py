"""The zero-shot propagated prior: formula, following a moving object (where an EMA stays behind), the bank."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from selfvos.inference.temporal import PropagatedPrior


def square_features(x0: int, size: int = 6, shape=(16, 24)) -> torch.Tensor:
    """Unit-norm features (2, h, w): (1, 0) on a size x size square at column x0, (0, 1) elsewhere."""
    inside = torch.zeros(shape)
    inside[5:5 + size, x0:x0 + size] = 1
    return torch.stack([inside, 1 - inside])


def test_nothing_to_propagate_before_the_first_output():
    assert PropagatedPrior().predict(square_features(3)) is None


def test_prior_follows_the_moving_object():
    """The output of frame 0 (the square at x 3) lands on the square's new place (x 7) on frame 1."""
    prior = PropagatedPrior(frames=2, topk=5, temperature=0.07, radius=6)
    first = square_features(3)
    prior.remember(first, first[0].numpy())
    moved = square_features(7)
    got = prior.predict(moved)
    assert got.shape == (16, 24)
    np.testing.assert_allclose(got.numpy(), moved[0].numpy(), atol=1e-5)
    ema = 0.5 * first[0] + 0.5 * moved[0]  # what a moving average of the two frames' masks would give
    assert ((ema > 0.5) != (moved[0] > 0.5)).sum() > 0 and ((got > 0.5) == (moved[0] > 0.5)).all()


def test_prior_matches_the_formula():
    """prior(p) = sum over the top-k context cells in p's window of softmax(a / T) * stored foreground."""
    torch.manual_seed(0)
    feats = [torch.nn.functional.normalize(torch.randn(4, 5, 6), dim=0) for _ in range(3)]
    outputs = [np.random.default_rng(i).random((10, 12)).astype(np.float32) for i in range(2)]
    prior = PropagatedPrior(frames=1, topk=3, temperature=0.1, radius=1)
    for f, o in zip(feats, outputs):
        prior.remember(f, o)
    got = prior.predict(feats[2])
    # expected by hand: context = frames 0 (anchor) and 1, labels = outputs area-averaged 2x2
    labels = [torch.from_numpy(o).reshape(5, 2, 6, 2).mean((1, 3)) for o in outputs]
    expected = torch.zeros(5, 6)
    for y in range(5):
        for x in range(6):
            scores, values = [], []
            for f, lab in zip(feats[:2], labels):
                for yy in range(max(0, y - 1), min(5, y + 2)):
                    for xx in range(max(0, x - 1), min(6, x + 2)):
                        scores.append(float(feats[2][:, y, x] @ f[:, yy, xx]))
                        values.append(float(lab[yy, xx]))
            top = np.argsort(scores)[::-1][:3]
            weights = torch.softmax(torch.tensor([scores[i] for i in top]) / 0.1, 0)
            expected[y, x] = sum(float(w) * values[i] for w, i in zip(weights, top))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_bank_keeps_the_first_frame_and_the_last_ones():
    prior = PropagatedPrior(frames=2)
    for x in range(5):
        prior.remember(square_features(x), np.zeros((16, 24), np.float32))
    assert prior.bank.frame_indices == [0, 3, 4]
    prior.reset()
    assert len(prior.bank) == 0 and prior.predict(square_features(0)) is None


@pytest.mark.parametrize("kwargs", [dict(frames=-1), dict(topk=0), dict(temperature=0.0), dict(radius=-1)])
def test_invalid_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        PropagatedPrior(**kwargs)
