"""Gaussian-matrix operators: compressive sensing and phase retrieval, dense or seeded."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from metadip import dispatch, functional
from metadip.operators.base import Operator, _check_ratio, _generator, _image_shape, _randn_like

__all__ = ["STORAGES", "CompressiveSensing", "PhaseRetrieval"]

STORAGES = ("dense", "seeded")


class _MatrixOperator(Operator):
    """A Gaussian matrix acting on ``vec(x)``; with ``channelwise`` one A per channel.

    ``m = round(ratio * n)`` with n = C·H·W (or H·W when ``channelwise``).
    ``storage="dense"`` draws A with torch's CPU generator from ``seed`` and keeps
    it; ``storage="seeded"`` never stores it: its entries come from Philox keyed by
    (seed, row, column) inside the kernels (``metadip.dispatch``), so large images
    need no O(mn) memory. Either way (shape, ratio, seed, storage, dtype) fixes A.
    """

    complex: bool = False
    # Dense storage: residual_sq's value and gradient in one read of A (dispatch.dense_normal).
    fused_residual = True

    def __init__(
        self,
        shape: Sequence[int],
        ratio: float,
        sigma: float = 0.0,
        seed: int = 0,
        channelwise: bool = False,
        dtype: torch.dtype = torch.float32,
        device: Any = None,
        storage: str = "dense",
    ):
        shape = _image_shape(shape)
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        self.ratio = _check_ratio(ratio)
        self.seed = int(seed)
        self.channelwise = bool(channelwise)
        self.storage = storage
        c, h, w = shape
        self.n = h * w if self.channelwise else c * h * w
        self.m = max(1, round(self.ratio * self.n))
        out = (c, self.m) if self.channelwise else (self.m,)
        super().__init__(shape, out, sigma)
        # An empty buffer that carries dtype and device through .to() (seeded storage
        # has no other tensor).
        self.register_buffer("_anchor", torch.empty(0, dtype=dtype, device=device))
        names = self.PLANES if storage == "dense" else ()
        for name, plane in zip(names, self._draw(dtype), strict=False):
            self.register_buffer(name, plane.to(device))

    PLANES: tuple[str, ...] = ()

    @property
    def dtype(self) -> torch.dtype:
        return self._anchor.dtype

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    def _draw(self, dtype: torch.dtype) -> tuple[Tensor, ...]:
        g = _generator(self.seed)
        if not self.complex:
            return (torch.randn(self.m, self.n, generator=g, dtype=dtype) / math.sqrt(self.m),)
        scale = 1.0 / math.sqrt(2 * self.m)
        return tuple(torch.randn(self.m, self.n, generator=g, dtype=dtype) * scale for _ in "ri")

    def planes(self) -> tuple[Tensor, ...]:
        """A as real planes ``(m, n)``: ``(A,)`` or ``(a_real, a_imag)``; materialized
        (O(mn) memory) in seeded storage."""
        if self.storage == "dense":
            return tuple(getattr(self, name) for name in self.PLANES)
        a = dispatch.seeded_gaussian(
            self.seed, self.m, self.n, complex=self.complex, dtype=self.dtype, device=self.device
        )
        return a if self.complex else (a,)

    def _residual_sq(self, x: Tensor, y: Tensor) -> Tensor:
        planes = self.planes() if self.storage == "dense" else ()
        if not planes or y.requires_grad or any(p.requires_grad for p in planes):
            return super()._residual_sq(x, y)
        imag = planes[1] if self.complex else None
        rows = _DenseResidualSq.apply(self._flat(x), y.reshape(-1, self.m), planes[0], imag)
        return rows.reshape(x.shape[0], -1).sum(dim=1)

    def _flat(self, x: Tensor) -> Tensor:
        return x.reshape(-1, self.n)  # (B*C, n) channelwise, else (B, n)

    def _unflat_y(self, y: Tensor, batch: int) -> Tensor:
        return y.reshape(batch, *self.out_shape)


class CompressiveSensing(_MatrixOperator):
    """Compressive sensing ``y = A x + sigma e``, A with i.i.d. N(0, 1/m) entries.

    See ``_MatrixOperator`` for ``m``, ``channelwise`` and ``storage``. Dense A is
    the buffer ``op.matrix`` ``(m, n)`` (``planes()[0]`` also in seeded storage).
    """

    task = "cs"
    linear = True
    PLANES = ("matrix",)

    def _forward(self, x: Tensor) -> Tensor:
        flat = self._flat(x)
        if self.storage == "seeded":
            y = dispatch.seeded_measure(flat, self.seed, self.m, complex=False)
        else:
            y = dispatch.dense_measure(flat, self.matrix)
        return self._unflat_y(y, x.shape[0])

    def _adjoint(self, y: Tensor) -> Tensor:
        flat = y.reshape(-1, self.m)
        if self.storage == "seeded":
            x = dispatch.seeded_adjoint(flat, self.seed, self.n)
        else:
            x = dispatch.dense_adjoint(flat, self.matrix)
        return x.reshape(y.shape[0], *self.in_shape)


class _DenseResidualSq(torch.autograd.Function):
    """``‖F(x_r) − y_r‖²`` per row r of x ``(R, n)`` -> ``(R,)`` for a stored A, ``F = A``
    (real) or ``F = |A ·|`` (``a_imag`` given), with the gradient computed in the same pass
    as the value (``dispatch.dense_normal``: one read of A instead of two). First order
    only: a second derivative raises."""

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, a: Tensor, a_imag: Tensor | None) -> Tensor:
        value, g = dispatch.dense_normal(x, a, y, a_imag)
        ctx.save_for_backward(g)
        return (value - y).pow(2).sum(dim=1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:
        # Grad mode is on in a backward only under create_graph: the gradient computed
        # in the forward is a value, so a second derivative through it would be wrong.
        if torch.is_grad_enabled():
            raise RuntimeError(
                "residual_sq of a dense matrix operator is differentiable once (its "
                "gradient comes from the one-pass kernel); for second derivatives "
                "(create_graph=True) use op.forward"
            )
        (g,) = ctx.saved_tensors
        return 2 * grad[:, None] * g, None, None, None


class PhaseRetrieval(_MatrixOperator):
    """Compressive phase retrieval ``y = |A x + e|``, A i.i.d. complex CN(0, 1/m).

    Real and imaginary parts of A are N(0, 1/(2m)), stored (dense) as planes
    ``a_real``, ``a_imag`` ``(m, n)``; the noise e is complex Gaussian with
    ``E|e|^2 = sigma^2`` (each part N(0, sigma^2/2)); in seeded storage ``planes()``
    materializes them. See ``_MatrixOperator`` for ``m``, ``channelwise`` and ``storage``.
    """

    task = "pr"
    complex = True
    PLANES = ("a_real", "a_imag")

    def _forward(self, x: Tensor) -> Tensor:
        flat = self._flat(x)
        if self.storage == "seeded":
            y = dispatch.seeded_measure(flat, self.seed, self.m, complex=True)
        else:
            y = functional.complex_measure(flat, *self.planes())
        return self._unflat_y(y, x.shape[0])

    def _start(self, y: Tensor) -> Tensor:
        # The constant image c·1 whose measurement energy matches y's, per channel when
        # channelwise: ‖A(c·1)‖² = ‖y‖² − mσ² (E|aᵢx + eᵢ|² = |aᵢx|² + σ²). A natural
        # image's mean dominates it, which is what amplitude flow needs to find the phase.
        ones = y.new_ones(y.shape[0], *self.in_shape)
        energy = (y.pow(2).sum(dim=-1) - self.m * self.sigma**2).clamp_min(0)
        c = (energy / self._forward(ones).pow(2).sum(dim=-1).clamp_min(1e-30)).sqrt()
        return ones * c.clamp(0, 1).view(y.shape[0], -1, 1, 1)

    def measure(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``|A x + e|`` with complex Gaussian e (noise enters before the magnitude, so in
        seeded storage this one call materializes A)."""
        xb, single = self._split(x, self.in_shape, "x")
        flat = self._flat(xb)
        a_real, a_imag = self.planes()
        re = flat @ a_real.t()
        im = flat @ a_imag.t()
        if self.sigma > 0:
            s = self.sigma / math.sqrt(2)
            re = re + s * _randn_like(re, generator)
            im = im + s * _randn_like(im, generator)
        y = self._unflat_y(torch.sqrt(re * re + im * im), xb.shape[0])
        return y[0] if single else y
