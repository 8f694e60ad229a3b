"""Pixel grid and backward warping: a known integer shift reconstructs the shifted image exactly."""
import torch

from selfvos.layers.warp import backward_warp, pixel_grid


def test_pixel_grid_coordinates():
    grid = pixel_grid(3, 4)
    assert grid.shape == (2, 3, 4)
    assert grid[0, 0].tolist() == [0, 1, 2, 3] and grid[1, :, 0].tolist() == [0, 1, 2]
    unit = pixel_grid(3, 5, normalized=True)
    assert unit[0, 0, 0] == -1 and unit[0, 0, -1] == 1 and unit[1, -1, 0] == 1


def test_backward_warp_undoes_a_shift():
    torch.manual_seed(0)
    frame_t = torch.rand(2, 3, 10, 12)
    frame_t1 = torch.roll(frame_t, shifts=(1, 2), dims=(2, 3))  # content moves 2 px right, 1 px down
    flow = torch.zeros(2, 2, 10, 12)
    flow[:, 0], flow[:, 1] = 2.0, 1.0
    rebuilt = backward_warp(frame_t1, flow)
    assert torch.allclose(rebuilt[:, :, :-1, :-2], frame_t[:, :, :-1, :-2], atol=1e-5)
    assert torch.allclose(backward_warp(frame_t, torch.zeros_like(flow)), frame_t, atol=1e-6)
