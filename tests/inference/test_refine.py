"""GuidedRefiner: a grid-blurred boundary snaps to the image edge, distributions stay distributions,
radius 0 is the identity, clear errors."""
from __future__ import annotations

import pytest
import torch

from selfvos.inference.refine import GuidedRefiner


def _edge_scene(edge: int = 37, size: int = 64):
    """Image dark left of column ``edge``, bright from it (plus texture); foreground labels a 16 px wide ramp
    crossing 0.5 at column 32, as a coarse grid's bilinear upsampling leaves a boundary: 5 px off the edge."""
    gen = torch.Generator().manual_seed(0)
    image = torch.full((1, 3, size, size), 0.2)
    image[..., edge:] = 0.8
    image = (image + 0.02 * torch.rand(image.shape, generator=gen)).clamp(0, 1)
    fg = ((torch.arange(size, dtype=torch.float32) - 24) / 16).clamp(0, 1).expand(size, size)
    return image, torch.stack([1 - fg, fg])


def _boundary_error(probs: torch.Tensor, edge: int) -> float:
    """Mean over rows of |first foreground column - edge|."""
    first = (probs.argmax(0) == 1).float().argmax(1)
    return float((first - edge).abs().float().mean())


@pytest.mark.parametrize("subsample", [1, 4])
def test_blurred_boundary_snaps_to_the_image_edge(subsample):
    image, probs = _edge_scene()
    assert _boundary_error(probs, 37) >= 4
    refined = GuidedRefiner(radius=8, eps=1e-4, subsample=subsample)(image, probs)
    steepest = (refined[1, :, 1:] - refined[1, :, :-1]).argmax(1) + 1  # column where foreground jumps most
    on_edge = (steepest == 37).float().mean()  # the ramp became a step at the image edge
    assert on_edge == 1.0 if subsample == 1 else on_edge > 0.8  # the fast filter's coefficients are coarser
    assert _boundary_error(refined, 37) <= 1.0
    assert torch.allclose(refined.sum(0), torch.ones(64, 64), atol=1e-5)
    assert refined.min() >= 0


def test_flat_image_keeps_a_constant_distribution_and_radius_0_is_identity():
    image = torch.full((1, 3, 32, 40), 0.5)
    probs = torch.tensor([0.3, 0.7])[:, None, None].expand(2, 32, 40).contiguous()
    assert torch.allclose(GuidedRefiner(radius=4)(image, probs), probs, atol=1e-5)
    assert GuidedRefiner(radius=0)(image, probs) is probs


def test_argmax_never_changes_by_renormalisation():
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 40, 48, generator=gen)
    probs = torch.softmax(3 * torch.randn(3, 40, 48, generator=gen), 0)
    refiner = GuidedRefiner(radius=3, eps=1e-3, subsample=1)
    from kornia.filters import guided_blur

    raw = guided_blur(image, probs[None], 7, 1e-3, border_type="replicate", separable=True)[0]
    assert torch.equal(refiner(image, probs).argmax(0), raw.argmax(0))


def test_clear_errors():
    with pytest.raises(ValueError, match="radius >= 0"):
        GuidedRefiner(radius=-1)
    with pytest.raises(ValueError, match="eps > 0"):
        GuidedRefiner(eps=0)
    with pytest.raises(ValueError, match="differ in size"):
        GuidedRefiner(radius=2)(torch.zeros(1, 3, 8, 8), torch.zeros(2, 8, 9))
