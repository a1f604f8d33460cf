"""Operators the shipped defaults were not chosen for, as a user's own operator looks to
metadip (``task = "custom"``), for ``recipe_study.py``: ``custom:NAME`` tasks.

  ``custom:blur5``      a milder Gaussian blur (5×5, std 1) than the shipped ``blur``
  ``custom:inpaint0.2`` 20 % of the pixels observed (the inpainting default saw 50 %)
  ``custom:cs0.1``      compressive sensing at m/n = 0.1
  ``custom:blur-sr2``   the classical super-resolution model: the 9×9 std-2 blur, then 2×
                        box downsampling; no cheap pseudo-inverse, so solvers start at Aᵀy
Each has σ = 25 (0-255 scale) and is seeded like the grammar's tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor

from metadip.operators import Blur, CompressiveSensing, Inpainting, Operator, SuperResolution
from metadip.tasks import MEASUREMENT_SIGMA

PREFIX = "custom:"
SIGMA = MEASUREMENT_SIGMA / 255


class _BlurThenDownsample(Operator):
    """``y = D B x + σ e``: ``B`` the 9×9 Gaussian blur of std 2, ``D`` 2× box downsampling."""

    linear = True

    def __init__(self, shape: Sequence[int], sigma: float):
        down = SuperResolution(shape, 2)
        super().__init__(shape, down.out_shape, sigma)
        self.blur, self.down = Blur(shape, kernel_size=9, kernel_sigma=2.0), down

    def _forward(self, x: Tensor) -> Tensor:
        return self.down.forward(self.blur.forward(x))

    def _adjoint(self, y: Tensor) -> Tensor:
        return self.blur.adjoint(self.down.adjoint(y))


BUILDERS: dict[str, Callable[[Sequence[int], int], Operator]] = {
    "blur5": lambda shape, seed: Blur(shape, kernel_size=5, kernel_sigma=1.0, sigma=SIGMA),
    "inpaint0.2": lambda shape, seed: Inpainting(shape, ratio=0.2, sigma=SIGMA, seed=seed),
    "cs0.1": lambda shape, seed: CompressiveSensing(shape, 0.1, SIGMA, seed, channelwise=True),
    "blur-sr2": lambda shape, seed: _BlurThenDownsample(shape, SIGMA),
}


def custom_operator(task: str, shape: Sequence[int], seed: int) -> Operator:
    """The operator of ``custom:NAME`` for images of ``shape``, with ``task = "custom"`` so
    that ``init="default"`` picks what it picks for a user's operator."""
    name = task[len(PREFIX) :]
    if name not in BUILDERS:
        raise ValueError(f"unknown task {task!r}; custom tasks: {', '.join(BUILDERS)}")
    op = BUILDERS[name](shape, seed)
    op.task = "custom"
    return op
