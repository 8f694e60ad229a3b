"""Motion models: basis rows, closed-form weighted fit against numpy.linalg.lstsq, exact recovery, gradients."""
import numpy as np
import pytest
import torch

from selfvos.layers.motion_models import fit_motion, motion_basis, motion_flow
from selfvos.layers.warp import pixel_grid


pytestmark = pytest.mark.usefixtures("one_thread")


def test_basis_rows_are_the_monomials_of_normalised_coordinates():
    x, y = pixel_grid(3, 4, normalized=True).flatten(1)
    affine = motion_basis(3, 4, "affine")
    quadratic = motion_basis(3, 4, "quadratic")
    assert affine.shape == (3, 12) and quadratic.shape == (6, 12)
    torch.testing.assert_close(affine, torch.stack([torch.ones(12), x, y]))
    torch.testing.assert_close(quadratic, torch.stack([torch.ones(12), x, y, x * x, x * y, y * y]))
    assert quadratic[1].min() == -1 and quadratic[2].max() == 1
    with pytest.raises(ValueError, match="unknown motion model"):
        motion_basis(3, 4, "homography")


def lstsq_reference(flow: np.ndarray, weights: np.ndarray, basis: np.ndarray, ridge: float = 0.0) -> np.ndarray:
    """theta (B, K, P, 2) by numpy.linalg.lstsq on rows scaled by sqrt(w); the ridge as P extra rows
    sqrt(N * ridge) * I with target 0 (the fit's ridge acts on the per-pixel-mean normal matrix)."""
    b, k = weights.shape[:2]
    p, n = basis.shape
    out = np.zeros((b, k, p, 2))
    for i in range(b):
        for j in range(k):
            root = np.sqrt(weights[i, j].reshape(-1, 1))
            rows = np.concatenate([basis.T * root, np.sqrt(n * ridge) * np.eye(p)])
            targets = np.concatenate([flow[i].reshape(2, -1).T * root, np.zeros((p, 2))])
            out[i, j] = np.linalg.lstsq(rows, targets, rcond=None)[0]
    return out


@pytest.mark.parametrize("ridge", [0.0, 1e-6, 1e-2])
@pytest.mark.parametrize("model", ["affine", "quadratic"])
def test_fit_equals_numpy_lstsq_of_the_weighted_problem(model, ridge):
    torch.manual_seed(0)
    flow = 3 * torch.randn(2, 2, 9, 11)
    weights = torch.rand(2, 3, 9, 11)
    weights[1, 2, :, :5] = 0.0  # a partly empty segment: badly conditioned, the ridge matters
    theta = fit_motion(flow, weights, model, ridge=ridge)
    assert theta.shape == (2, 3, 6 if model == "quadratic" else 3, 2)
    basis = motion_basis(9, 11, model, dtype=torch.float64).numpy()
    expected = lstsq_reference(flow.double().numpy(), weights.double().numpy(), basis, ridge)
    np.testing.assert_allclose(theta.double().numpy(), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("model", ["affine", "quadratic"])
def test_a_flow_of_the_model_is_recovered_exactly(model):
    torch.manual_seed(1)
    basis = motion_basis(7, 8, model)
    theta = torch.randn(1, 1, basis.shape[0], 2)
    flow = motion_flow(theta, basis, (7, 8))[:, 0]  # (1, 2, 7, 8)
    assert flow.shape == (1, 2, 7, 8)
    assert torch.equal(flow[0, 0, 2, 3], (theta[0, 0, :, 0] * basis[:, 2 * 8 + 3]).sum())
    fitted = fit_motion(flow, torch.rand(1, 1, 7, 8) + 0.1, model)
    torch.testing.assert_close(fitted, theta, atol=1e-4, rtol=0)
    torch.testing.assert_close(motion_flow(fitted, basis, (7, 8))[:, 0], flow, atol=1e-4, rtol=0)


def test_fit_is_differentiable_in_weights_and_flow():
    torch.manual_seed(2)
    flow = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    weights = (torch.rand(1, 2, 4, 5, dtype=torch.float64) + 0.2).requires_grad_()
    assert torch.autograd.gradcheck(lambda f, w: fit_motion(f, w, "quadratic"), (flow, weights))


def test_an_empty_segment_gets_zero_motion_and_finite_gradients():
    torch.manual_seed(3)
    flow = torch.randn(1, 2, 6, 6, requires_grad=True)
    weights = torch.rand(1, 2, 6, 6)
    weights[0, 1] = 0.0
    weights.requires_grad_()
    theta = fit_motion(flow, weights, "quadratic")
    assert torch.equal(theta[0, 1], torch.zeros(6, 2))
    theta.sum().backward()
    assert torch.isfinite(weights.grad).all() and torch.isfinite(flow.grad).all()
    assert weights.grad[0, 0].abs().sum() > 0
