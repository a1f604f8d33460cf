"""Launch configuration shared by every Triton kernel: grids checked against CUDA's
limits, and the device a launch must run on.

A CUDA grid holds at most 2³¹ − 1 programs along axis 0 and 65535 along axes 1 and 2.
The kernels put the axis that grows with the image (tiles of pixels, rows or columns of
A) on axis 0 and the short one (planes, batch tiles, frequencies) on axis 1, and
``grid`` refuses, with the sizes, a launch that would still not fit instead of letting
CUDA fail or, worse, wrap around.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["MAX_GRID", "device_of", "grid"]

MAX_GRID = (2**31 - 1, 65535, 65535)


def grid(*programs: int, what: str = "kernel") -> tuple[int, ...]:
    """``programs`` per axis as a launch grid; raises ValueError when an axis is empty
    or exceeds ``MAX_GRID`` (``what`` names the launch in the message)."""
    if not 1 <= len(programs) <= 3:
        raise ValueError(f"{what}: a grid has 1 to 3 axes, got {len(programs)}")
    for axis, (n, limit) in enumerate(zip(programs, MAX_GRID, strict=False)):
        if n < 1:
            raise ValueError(f"{what}: grid axis {axis} has {n} programs; the problem is empty")
        if n > limit:
            raise ValueError(
                f"{what}: grid axis {axis} needs {n} programs but CUDA allows {limit}; "
                "the problem is too large for one launch (split the batch or the image)"
            )
    return tuple(int(n) for n in programs)


@contextlib.contextmanager
def device_of(t: Tensor) -> Iterator[None]:
    """Runs the launches inside on ``t``'s CUDA device (Triton launches on the current
    device, so a tensor on ``cuda:1`` would otherwise fault); nothing on the CPU."""
    if t.is_cuda:
        with torch.cuda.device(t.device):
            yield
    else:
        yield
