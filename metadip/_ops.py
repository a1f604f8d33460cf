"""torch.library registration of the C++/CUDA extension (``metadip._C_cuda``, else ``_C``).

Each primitive of ``_C`` becomes a ``metadip::<name>`` custom op with a fake
(meta) implementation, so it composes with torch.compile and FakeTensor, and
with an autograd formula written in terms of other custom ops or torch ops, so
every public op is twice differentiable:

* ``tv_fwd(x) -> (value, G)``: backward ``g·G + tv_hvp(x, g_G)``; G being an
  output, double backward reaches the HVP through it.
* ``cm_lin`` (z = A x) and ``cm_adj`` (Aᵀw) are each other's backward.
* ``cm_meas(x) -> (|z|, z)``: backward ``cm_adj(g_z + g·z/|z|)``; the fused
  ``cm_adj_phase`` is used when no graph is being built.
* ``ff_fwd`` -> ``ff_bwd`` -> closed-form torch (``fourier_double_backward``).

The pure-torch pieces of the formulas (``phase_weights``, ``fourier_double_backward``)
live in ``metadip.reference``, shared with the Triton autograd wrappers.
Importing this module never fails: without the extension nothing is registered
and ``EXT_ERROR`` says why.
"""

import torch
from torch import Tensor

from metadip.reference import fourier_double_backward, phase_weights

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


if HAS_EXT:

    @torch.library.custom_op("metadip::tv_fwd", mutates_args=())
    def tv_fwd(x: Tensor, eps: float, with_grad: bool = True) -> tuple[Tensor, Tensor]:
        """TV value ``(B,)`` and gradient ``(B,C,H,W)`` in one sweep (``(0,)`` if not with_grad)."""
        val, grad = _C.tv_fwd(x, eps, with_grad)
        return val, grad

    @tv_fwd.register_fake
    def _(x: Tensor, eps: float, with_grad: bool = True) -> tuple[Tensor, Tensor]:
        return x.new_empty(x.shape[0]), torch.empty_like(x) if with_grad else x.new_empty(0)

    @torch.library.custom_op("metadip::tv_hvp", mutates_args=())
    def tv_hvp(x: Tensor, v: Tensor, eps: float) -> Tensor:
        """Hessian of tv at x applied to v, ``(B,C,H,W)``."""
        return _C.tv_hvp(x, v, eps)

    @tv_hvp.register_fake
    def _(x: Tensor, v: Tensor, eps: float) -> Tensor:
        return torch.empty_like(x)

    def _tv_setup(ctx, inputs, output) -> None:
        x, eps = inputs[0], inputs[1]
        ctx.eps = eps
        ctx.save_for_backward(x, output[1])
        ctx.set_materialize_grads(False)

    def _tv_backward(ctx, g_val: Tensor | None, g_grad: Tensor | None):
        x, grad = ctx.saved_tensors
        out = None
        if g_val is not None:
            if grad.numel() != x.numel():
                # Forward skipped the gradient (no grad was expected, e.g. under a
                # functorch transform that hides requires_grad): recompute it.
                grad = tv_fwd(x, ctx.eps, True)[1]
            out = g_val.view(-1, 1, 1, 1) * grad
        if g_grad is not None:
            h = tv_hvp(x, g_grad, ctx.eps)
            out = h if out is None else out + h
        return out, None, None

    tv_fwd.register_autograd(_tv_backward, setup_context=_tv_setup)

    def _hvp_setup(ctx, inputs, output) -> None:
        x, _, eps = inputs
        ctx.eps = eps
        ctx.save_for_backward(x)

    def _hvp_backward(ctx, gg: Tensor):
        (x,) = ctx.saved_tensors
        if ctx.needs_input_grad[0]:
            raise NotImplementedError("third-order derivatives of tv are not implemented")
        return None, tv_hvp(x, gg, ctx.eps), None

    tv_hvp.register_autograd(_hvp_backward, setup_context=_hvp_setup)

    # --- measurements: ar is None in seeded mode (seed, m/n, scale then define A) ---

    @torch.library.custom_op("metadip::cm_lin", mutates_args=())
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

    @cm_lin.register_fake
    def _(x, ar, ai, seed, m, cplx, scale):
        rows = m if ar is None else ar.shape[0]
        planes = (2 if cplx else 1) if ar is None else (2 if ai is not None else 1)
        return x.new_empty(planes, x.shape[0], rows)

    @torch.library.custom_op("metadip::cm_adj", mutates_args=())
    def cm_adj(
        w: Tensor, ar: Tensor | None, ai: Tensor | None, seed: int, n: int, scale: float
    ) -> Tensor:
        """``Σ_p w_p A_p``: ``(P, B, m)`` -> ``(B, n)``."""
        return _C.cm_adj(w, ar, ai, seed, n, scale)

    @cm_adj.register_fake
    def _(w, ar, ai, seed, n, scale):
        return w.new_empty(w.shape[1], n if ar is None else ar.shape[1])

    @torch.library.custom_op("metadip::cm_meas", mutates_args=())
    def cm_meas(
        x: Tensor, ar: Tensor | None, ai: Tensor | None, seed: int, m: int, scale: float
    ) -> tuple[Tensor, Tensor]:
        """``(|A x| (B, m), z (2, B, m))`` for complex A."""
        y, z = _C.cm_meas(x, ar, ai, seed, m, scale)
        return y, z

    @cm_meas.register_fake
    def _(x, ar, ai, seed, m, scale):
        rows = m if ar is None else ar.shape[0]
        return x.new_empty(x.shape[0], rows), x.new_empty(2, x.shape[0], rows)

    @torch.library.custom_op("metadip::cm_adj_phase", mutates_args=())
    def cm_adj_phase(
        g: Tensor, z: Tensor, ar: Tensor | None, ai: Tensor | None, seed: int, n: int, scale: float
    ) -> Tensor:
        """Fused ``Re Aᴴ(g ⊙ z/|z|)`` (0 where |z| = 0); first-order only."""
        return _C.cm_adj_phase(g, z, ar, ai, seed, n, scale)

    @cm_adj_phase.register_fake
    def _(g, z, ar, ai, seed, n, scale):
        return g.new_empty(g.shape[0], n if ar is None else ar.shape[1])

    @torch.library.custom_op("metadip::cm_materialize", mutates_args=())
    def cm_materialize(seed: int, m: int, n: int, cplx: bool, scale: float, like: Tensor) -> Tensor:
        """The seeded matrix as planes ``(P, m, n)``, dtype/device of ``like``."""
        return _C.cm_materialize(seed, m, n, cplx, scale, like)

    @cm_materialize.register_fake
    def _(seed, m, n, cplx, scale, like):
        return like.new_empty(2 if cplx else 1, m, n)

    def _n_of(ctx) -> int:
        return ctx.n

    def _lin_setup(ctx, inputs, output) -> None:
        x, ar, ai, seed, m, cplx, scale = inputs
        ctx.args = (seed, m, cplx, scale)
        ctx.n = x.shape[1]
        ctx.save_for_backward(x, ar, ai)

    def _lin_backward(ctx, gz: Tensor):
        x, ar, ai = ctx.saved_tensors
        seed, m, cplx, scale = ctx.args
        gx = cm_adj(gz, ar, ai, seed, ctx.n, scale) if ctx.needs_input_grad[0] else None
        gar = gz[0].t() @ x if ctx.needs_input_grad[1] else None
        gai = gz[1].t() @ x if ctx.needs_input_grad[2] else None
        return gx, gar, gai, None, None, None, None

    cm_lin.register_autograd(_lin_backward, setup_context=_lin_setup)

    def _adj_setup(ctx, inputs, output) -> None:
        w, ar, ai, seed, n, scale = inputs
        ctx.args = (seed, w.shape[2], w.shape[0] == 2, scale)
        ctx.save_for_backward(w, ar, ai)

    def _adj_backward(ctx, gg: Tensor):
        w, ar, ai = ctx.saved_tensors
        seed, m, cplx, scale = ctx.args
        gw = cm_lin(gg, ar, ai, seed, m, cplx, scale) if ctx.needs_input_grad[0] else None
        gar = w[0].t() @ gg if ctx.needs_input_grad[1] else None
        gai = w[1].t() @ gg if ctx.needs_input_grad[2] else None
        return gw, gar, gai, None, None, None

    cm_adj.register_autograd(_adj_backward, setup_context=_adj_setup)

    def _meas_setup(ctx, inputs, output) -> None:
        x, ar, ai, seed, m, scale = inputs
        ctx.args = (seed, x.shape[1], scale)
        ctx.save_for_backward(x, ar, ai, output[0], output[1])
        ctx.set_materialize_grads(False)

    def _meas_backward(ctx, g_y: Tensor | None, g_z: Tensor | None):
        x, ar, ai, y, z = ctx.saved_tensors
        seed, n, scale = ctx.args
        a_grad = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        if g_y is None and g_z is None:
            return None, None, None, None, None, None
        if g_z is None and not torch.is_grad_enabled() and not a_grad:
            return cm_adj_phase(g_y, z, ar, ai, seed, n, scale), None, None, None, None, None
        w = phase_weights(g_y, y, z, g_z)
        gx = cm_adj(w, ar, ai, seed, n, scale) if ctx.needs_input_grad[0] else None
        gar = w[0].t() @ x if ctx.needs_input_grad[1] else None
        gai = w[1].t() @ x if ctx.needs_input_grad[2] else None
        return gx, gar, gai, None, None, None

    cm_meas.register_autograd(_meas_backward, setup_context=_meas_setup)

    # --- Fourier features ---

    @torch.library.custom_op("metadip::ff_fwd", mutates_args=())
    def ff_fwd(b: Tensor, height: int, width: int) -> Tensor:
        """``[sin φ; cos φ]`` ``(2k, H, W)`` with ``φ = 2π b·p``."""
        return _C.ff_fwd(b, height, width)

    @ff_fwd.register_fake
    def _(b, height, width):
        return b.new_empty(2 * b.shape[0], height, width)

    @torch.library.custom_op("metadip::ff_bwd", mutates_args=())
    def ff_bwd(g: Tensor, b: Tensor, height: int, width: int) -> Tensor:
        """Gradient wrt b ``(k, 2)`` given the features' cotangent g ``(2k, H, W)``."""
        return _C.ff_bwd(g, b, height, width)

    @ff_bwd.register_fake
    def _(g, b, height, width):
        return torch.empty_like(b)

    def _ff_setup(ctx, inputs, output) -> None:
        b, height, width = inputs
        ctx.hw = (height, width)
        ctx.save_for_backward(b)

    def _ff_backward(ctx, g: Tensor):
        (b,) = ctx.saved_tensors
        return ff_bwd(g.contiguous(), b, *ctx.hw), None, None

    ff_fwd.register_autograd(_ff_backward, setup_context=_ff_setup)

    def _ffb_setup(ctx, inputs, output) -> None:
        g, b, height, width = inputs
        ctx.hw = (height, width)
        ctx.save_for_backward(g, b)

    def _ffb_backward(ctx, gg: Tensor):
        g, b = ctx.saved_tensors
        cot_g, cot_b = fourier_double_backward(gg, g, b, *ctx.hw)
        return cot_g, cot_b, None, None

    ff_bwd.register_autograd(_ffb_backward, setup_context=_ffb_setup)
