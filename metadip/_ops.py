"""torch.library registration of the C++/CUDA extension (``metadip._C_cuda``, else ``_C``).

Each primitive of ``_C`` becomes a ``metadip::<name>`` operator (schema inferred from
its type hints) with a fake (meta) implementation, so it composes with torch.compile and
FakeTensor, and with the autograd formulas of ``metadip.autodiff`` (written once, in
terms of the operators themselves, and shared with the Triton backend), so every public
op is twice differentiable. They are defined with ``torch.library``'s ``define`` /
``impl`` rather than ``custom_op``, whose kernels import ``torch._dynamo`` on their first
call (about 1.2 s, once per process: a third of a short reconstruction).
Importing this module never fails: without the extension nothing is registered
and ``EXT_ERROR`` says why.
"""

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from metadip.autodiff import Primitives, register

__all__ = ["EXT_ERROR", "HAS_EXT"]

try:
    # The CUDA build (C++ and CUDA kernels) where it was built, else the C++ one.
    try:
        from metadip import _C_cuda as _C  # type: ignore[attr-defined]
    except ImportError:
        from metadip import _C  # type: ignore[attr-defined]

    HAS_EXT = True
    EXT_ERROR = ""
except ImportError as exc:  # built without the extension, or the build failed
    _C = None
    HAS_EXT = False
    EXT_ERROR = f"metadip._C is not importable ({exc})"

# The registration below needs torch.library's infer_schema (newer than torch 2.3).
if HAS_EXT and not hasattr(torch.library, "infer_schema"):
    HAS_EXT = False
    EXT_ERROR = f"metadip._C needs torch.library.infer_schema; torch {torch.__version__} lacks it"

if HAS_EXT:
    _LIB = torch.library.Library("metadip", "FRAGMENT")

    def _operator(fn: Callable[..., Any]) -> Any:
        """``fn`` as the operator ``metadip::<fn name>`` (CPU and CUDA kernels), returned
        as its ``OpOverload``; ``register_fake`` / ``register_autograd`` attach to it."""
        name = fn.__name__
        _LIB.define(name + torch.library.infer_schema(fn, mutates_args=()))
        for key in ("CPU", "CUDA"):
            _LIB.impl(name, fn, key)
        return getattr(torch.ops.metadip, name).default

    def _fake(op: Any) -> Callable[[Callable[..., Any]], Any]:
        return lambda fn: torch.library.register_fake(op, fn, lib=_LIB)

    @_operator
    def tv_fwd(x: Tensor, eps: float, with_grad: bool = True) -> tuple[Tensor, Tensor]:
        """TV value ``(B,)`` and gradient ``(B,C,H,W)`` in one sweep (``(0,)`` if not with_grad)."""
        val, grad = _C.tv_fwd(x, eps, with_grad)
        return val, grad

    @_fake(tv_fwd)
    def _(x: Tensor, eps: float, with_grad: bool = True) -> tuple[Tensor, Tensor]:
        return x.new_empty(x.shape[0]), torch.empty_like(x) if with_grad else x.new_empty(0)

    @_operator
    def tv_hvp(x: Tensor, v: Tensor, eps: float) -> Tensor:
        """Hessian of tv at x applied to v, ``(B,C,H,W)``."""
        return _C.tv_hvp(x, v, eps)

    @_fake(tv_hvp)
    def _(x: Tensor, v: Tensor, eps: float) -> Tensor:
        return torch.empty_like(x)

    # --- measurements: ar is None in seeded mode (seed, m/n, scale then define A) ---

    @_operator
    def cm_lin(
        x: Tensor,
        ar: Tensor | None,
        ai: Tensor | None,
        seed: int,
        m: int,
        cplx: bool,
        scale: float,
    ) -> Tensor:
        """``z = A x`` as planes ``(P, B, m)``, P = 2 for complex A, 1 for real."""
        return _C.cm_lin(x, ar, ai, seed, m, cplx, scale)

    @_fake(cm_lin)
    def _(x, ar, ai, seed, m, cplx, scale):
        rows = m if ar is None else ar.shape[0]
        planes = (2 if cplx else 1) if ar is None else (2 if ai is not None else 1)
        return x.new_empty(planes, x.shape[0], rows)

    @_operator
    def cm_adj(
        w: Tensor, ar: Tensor | None, ai: Tensor | None, seed: int, n: int, scale: float
    ) -> Tensor:
        """``Σ_p w_p A_p``: ``(P, B, m)`` -> ``(B, n)``."""
        return _C.cm_adj(w, ar, ai, seed, n, scale)

    @_fake(cm_adj)
    def _(w, ar, ai, seed, n, scale):
        return w.new_empty(w.shape[1], n if ar is None else ar.shape[1])

    @_operator
    def cm_meas(
        x: Tensor, ar: Tensor | None, ai: Tensor | None, seed: int, m: int, scale: float
    ) -> tuple[Tensor, Tensor]:
        """``(|A x| (B, m), z (2, B, m))`` for complex A."""
        y, z = _C.cm_meas(x, ar, ai, seed, m, scale)
        return y, z

    @_fake(cm_meas)
    def _(x, ar, ai, seed, m, scale):
        rows = m if ar is None else ar.shape[0]
        return x.new_empty(x.shape[0], rows), x.new_empty(2, x.shape[0], rows)

    @_operator
    def cm_adj_phase(
        g: Tensor, z: Tensor, ar: Tensor | None, ai: Tensor | None, seed: int, n: int, scale: float
    ) -> Tensor:
        """Fused ``Re Aᴴ(g ⊙ z/|z|)`` (0 where |z| = 0); first-order only."""
        return _C.cm_adj_phase(g, z, ar, ai, seed, n, scale)

    @_fake(cm_adj_phase)
    def _(g, z, ar, ai, seed, n, scale):
        return g.new_empty(g.shape[0], n if ar is None else ar.shape[1])

    @_operator
    def cm_normal(x: Tensor, ar: Tensor, ai: Tensor | None, y: Tensor) -> tuple[Tensor, Tensor]:
        """A stored A's fit value and gradient, one read of A: real ``(A x, Aᵀ(A x − y))``,
        complex ``(|A x|, Re Aᴴ((|z| − y) z/|z|))``. No autograd (the residual's
        first-order rule in ``metadip.operators`` uses it as a value)."""
        v, g = _C.cm_normal(x, ar, ai, y)
        return v, g

    @_fake(cm_normal)
    def _(x, ar, ai, y):
        return x.new_empty(x.shape[0], ar.shape[0]), torch.empty_like(x)

    @_operator
    def cm_materialize(seed: int, m: int, n: int, cplx: bool, scale: float, like: Tensor) -> Tensor:
        """The seeded matrix as planes ``(P, m, n)``, dtype/device of ``like``."""
        return _C.cm_materialize(seed, m, n, cplx, scale, like)

    @_fake(cm_materialize)
    def _(seed, m, n, cplx, scale, like):
        return like.new_empty(2 if cplx else 1, m, n)

    # --- Fourier features ---

    @_operator
    def ff_fwd(b: Tensor, height: int, width: int) -> Tensor:
        """``[sin φ; cos φ]`` ``(2k, H, W)`` with ``φ = 2π b·p``."""
        return _C.ff_fwd(b, height, width)

    @_fake(ff_fwd)
    def _(b, height, width):
        return b.new_empty(2 * b.shape[0], height, width)

    @_operator
    def ff_bwd(g: Tensor, b: Tensor, height: int, width: int) -> Tensor:
        """Gradient wrt b ``(k, 2)`` given the features' cotangent g ``(2k, H, W)``."""
        return _C.ff_bwd(g, b, height, width)

    @_fake(ff_bwd)
    def _(g, b, height, width):
        return torch.empty_like(b)

    # Every backward formula is metadip.autodiff's, shared with the Triton backend.
    register(
        Primitives(
            tv_fwd=tv_fwd,
            tv_hvp=tv_hvp,
            cm_lin=cm_lin,
            cm_adj=cm_adj,
            cm_meas=cm_meas,
            cm_adj_phase=cm_adj_phase,
            ff_fwd=ff_fwd,
            ff_bwd=ff_bwd,
        )
    )
