"""Launch configuration of the Triton kernels: CUDA's grid limits, on the CPU."""

from __future__ import annotations

import pytest
import torch
from metadip.kernels.launch import MAX_GRID, device_of, grid


def test_grid_accepts_the_limits_and_refuses_past_them():
    assert grid(MAX_GRID[0], MAX_GRID[1], MAX_GRID[2]) == MAX_GRID
    with pytest.raises(ValueError, match="axis 0 needs 2147483648 programs"):
        grid(2**31, 1)
    with pytest.raises(
        ValueError, match="tv: grid axis 1 needs 65536 programs but CUDA allows 65535"
    ):
        grid(1, 65536, what="tv")
    with pytest.raises(ValueError, match="axis 0 has 0 programs"):
        grid(0, 1)
    with pytest.raises(ValueError, match="1 to 3 axes"):
        grid(1, 1, 1, 1)


@pytest.mark.parametrize(
    ("what", "programs"),
    [
        # A 6000x6000 image in 8x64 tiles: 70 500 tiles, past axis 1's limit, fine on axis 0.
        ("tv", (750 * 94, 3)),
        # A 2048² gray image as the columns of a measurement adjoint: 65 536 column tiles.
        ("measurement adjoint", (2048 * 2048 // 64, 1)),
        # 8192² Fourier features: 65 536 pixel tiles per frequency.
        ("fourier_features", (8192 * 8192 // 1024, 16)),
    ],
)
def test_large_problems_fit_with_the_image_axis_first(what, programs):
    """The launchers put the axis that grows with the image on grid axis 0: these sizes
    failed with the old (batch, tiles) order and fit now."""
    assert grid(*programs, what=what) == programs
    with pytest.raises(ValueError, match="CUDA allows 65535"):
        grid(*reversed(programs), what=what)


def test_device_guard_is_a_no_op_on_the_cpu():
    with device_of(torch.zeros(1)):
        pass


@pytest.mark.gpu
def test_device_guard_selects_the_tensor_device():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    t = torch.zeros(1, device="cuda:1")
    with device_of(t):
        assert torch.cuda.current_device() == 1
