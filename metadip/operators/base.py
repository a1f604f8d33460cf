"""The operator base class: shapes, the noise model, deepinv's names, checks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["Operator", "Shape", "gram_norm", "require_linear"]

Shape = tuple[int, ...]


def _image_shape(shape: Sequence[int], name: str = "shape") -> Shape:
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{name} must be (C, H, W) or (H, W) with positive sizes, got {shape}")
    return shape


def _generator(seed: int) -> torch.Generator:
    # Always draw on the CPU so the same seed gives the same operator on every device.
    return torch.Generator(device="cpu").manual_seed(int(seed))


def _check_ratio(ratio: float, name: str = "ratio") -> float:
    if not 0 < ratio <= 1:
        raise ValueError(f"{name} must be in (0, 1], got {ratio}")
    return float(ratio)


def _check_sigma(sigma: float) -> float:
    if not (sigma >= 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    return float(sigma)


class Operator(nn.Module):
    """Base class: a forward model with explicit shapes and a Gaussian noise model.

    ``task`` names the kind of problem (``"denoise"``, ``"cs"``, ``"pr"``, ...; ``"custom"``
    for wrapped callables): ``init="default"`` picks the shipped init for it.
    """

    linear: bool = False
    task: str = "custom"
    # residual_sq has a one-pass path (value and gradient together, first order only).
    fused_residual: bool = False

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int], sigma: float = 0.0):
        super().__init__()
        self.in_shape: Shape = tuple(int(s) for s in in_shape)
        self.out_shape: Shape = tuple(int(s) for s in out_shape)
        self.sigma = _check_sigma(sigma)

    # -- shape handling -------------------------------------------------------------
    def _split(self, t: Tensor, shape: Shape, what: str) -> tuple[Tensor, bool]:
        """Returns t as a batch ``(B, *shape)`` and whether it came unbatched."""
        if not isinstance(t, Tensor):
            raise TypeError(f"{type(self).__name__}: {what} must be a torch.Tensor, got {type(t)}")
        if tuple(t.shape) == shape:
            return t.unsqueeze(0), True
        if t.dim() == len(shape) + 1 and tuple(t.shape[1:]) == shape:
            return t, False
        raise ValueError(
            f"{type(self).__name__}: {what} must have shape {shape} or (B, *{shape}), "
            f"got {tuple(t.shape)}"
        )

    def forward(self, x: Tensor) -> Tensor:
        """Noise-free measurement: ``(*, *in_shape) -> (*, *out_shape)``."""
        xb, single = self._split(x, self.in_shape, "x")
        y = self._forward(xb)
        return y[0] if single else y

    def residual_sq(self, x: Tensor, y: Tensor) -> Tensor:
        """``‖F(x_b) − y_b‖²`` per problem: x ``(B, *in_shape)``, y ``(B, *out_shape)`` ->
        ``(B,)``. Differentiable once in x (twice here; operators with a fused path, the
        dense compressive sensing and phase retrieval ones, give first-order gradients
        only: callers that need second derivatives use ``forward``)."""
        xb, _ = self._split(x, self.in_shape, "x")
        yb, _ = self._split(y, self.out_shape, "y")
        if xb.shape[0] != yb.shape[0]:
            raise ValueError(
                f"{type(self).__name__}.residual_sq: x has {xb.shape[0]} problems but y has "
                f"{yb.shape[0]}"
            )
        return self._residual_sq(xb, yb)

    def _residual_sq(self, x: Tensor, y: Tensor) -> Tensor:
        return (self.forward(x) - y).pow(2).flatten(1).sum(dim=1)

    def adjoint(self, y: Tensor) -> Tensor:
        """Adjoint ``A^T y``: ``(*, *out_shape) -> (*, *in_shape)`` (linear operators only)."""
        if not self.linear:
            raise NotImplementedError(f"{type(self).__name__} is not linear: it has no adjoint")
        yb, single = self._split(y, self.out_shape, "y")
        x = self._adjoint(yb)
        return x[0] if single else x

    def measure(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Noisy measurement ``y = A x + sigma * e``, ``e ~ N(0, I)``."""
        y = self.forward(x)
        if self.sigma == 0:
            return y
        return y + self.sigma * _randn_like(y, generator)

    # deepinv's names, so an operator can go where a deepinv Physics is expected.
    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        """``forward(x)``."""
        return self.forward(x)

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        """``adjoint(y)``."""
        return self.adjoint(y)

    def A_dagger(self, y: Tensor) -> Tensor:  # noqa: N802
        """The pseudo-inverse ``A⁺ y``: ``(*, *out_shape) -> (*, *in_shape)``, for the
        operators where it is cheap (``Denoise``, ``Inpainting``, ``SuperResolution``)."""
        yb, single = self._split(y, self.out_shape, "y")
        x = self._dagger(yb)
        return x[0] if single else x

    def _dagger(self, y: Tensor) -> Tensor:
        raise NotImplementedError(
            f"{type(self).__name__} has no cheap pseudo-inverse; use adjoint(y) or a solver"
        )

    @property
    def has_start(self) -> bool:
        """Whether ``estimate_start`` works: a linear operator, or one that defines it."""
        return self.linear or type(self)._start is not Operator._start

    def estimate_start(self, y: Tensor) -> Tensor:
        """A crude image for ``y`` where an iterative solver starts,
        ``(*, *out_shape) -> (*, *in_shape)`` in [0, 1]: ``clamp(A⁺y, 0, 1)`` for a linear
        operator with a cheap pseudo-inverse, else ``clamp(Aᵀy, 0, 1)``; a non-linear one
        says its own (``PhaseRetrieval``: a constant image)."""
        yb, single = self._split(y, self.out_shape, "y")
        x = self._start(yb)
        return x[0] if single else x

    def _start(self, y: Tensor) -> Tensor:
        if not self.linear:
            raise NotImplementedError(
                f"{type(self).__name__} is not linear and has no start estimate for an "
                "iterative solver"
            )
        # Aᵀy can be far off in scale (super-resolution's is 1/factor² of the image), which
        # a solver of a few dozen steps never makes up; A⁺y is the right brightness.
        if type(self)._dagger is not Operator._dagger:
            return self._dagger(y).clamp(0, 1)
        return self._adjoint(y).clamp(0, 1)

    def _forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _adjoint(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(in_shape={self.in_shape}, out_shape={self.out_shape}, sigma={self.sigma:g})"


def _randn_like(t: Tensor, generator: torch.Generator | None) -> Tensor:
    if generator is None:
        return torch.randn_like(t)
    dev = generator.device
    return torch.randn(t.shape, generator=generator, dtype=t.dtype, device=dev).to(t.device)


def require_linear(op: object, needs: str, instead: str) -> None:
    """Raises ``ValueError`` unless ``op`` is linear (has an adjoint): ``needs`` says what
    wanted the adjoint, ``instead`` what to use for a non-linear operator."""
    if not getattr(op, "linear", False):
        raise ValueError(f"{needs}, but {type(op).__name__} is not linear; {instead}")


def gram_norm(op: object, like: Tensor, iters: int = 20) -> Tensor:
    """``‖AᵀA‖`` per item of ``like`` ``(B, *in_shape)``, ``(B,)``, by ``iters`` power
    iterations (no graph): the Lipschitz constant of the data term's gradient, so
    ``1 / gram_norm`` is the largest safe gradient step (1 for a mask, ≤ 1 for a
    normalized blur, about (1 + √(n/m))² for Gaussian CS; 0 for an operator that observes
    nothing). For phase retrieval ``F(x) = |Ax|`` it is ``‖Re(AᴴA)‖``, the Gram of
    ``v ↦ ∇ ½‖F(v)‖²``, which is how a non-linear operator is iterated. The start is a
    fixed positive pattern made on ``like``'s device: a start drawn on the host would be a
    copy that CUDA-graph capture rejects."""
    n = like[0].numel()
    ramp = torch.arange(n, device=like.device, dtype=like.dtype).mul_(0.6180339887).frac_()
    v = (0.5 + ramp).expand(like.shape[0], n).reshape(like.shape)
    lam = like.new_zeros(like.shape[0])
    for _ in range(iters):
        v = v / v.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *[1] * (v.dim() - 1))
        w = _gram_apply(op, v)
        lam = (w * v).flatten(1).sum(dim=1)
        v = w
    return lam


def _gram_apply(op: object, v: Tensor) -> Tensor:
    """``AᵀA v`` for a linear operator, ``∇_v ½‖F(v)‖²`` for a non-linear one; both are
    ``∇_v ½‖F(v) − 0‖²``, which an operator with a one-pass residual gives reading A once."""
    fused = getattr(op, "fused_residual", False)
    if getattr(op, "linear", False) and not fused:
        with torch.no_grad():
            return op.adjoint(op.forward(v))  # type: ignore[attr-defined]
    with torch.enable_grad():
        vg = v.detach().requires_grad_()
        if fused:
            zeros = v.new_zeros(v.shape[0], *op.out_shape)  # type: ignore[attr-defined]
            energy = op.residual_sq(vg, zeros)  # type: ignore[attr-defined]
        else:
            energy = op.forward(vg).pow(2)  # type: ignore[attr-defined]
        (g,) = torch.autograd.grad(0.5 * energy.sum(), vg)
    return g
