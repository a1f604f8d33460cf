"""Every backward and double-backward formula of the kernel ops, written once.

A backend supplies a table of *primitives* (``Primitives``), each a differentiable
callable with the C++ op's signature; the formulas below are ``(setup_context,
backward)`` pairs written against that table. The C++ backend registers them on its
``torch.library`` operators (``register``); the Triton backend wraps its raw kernels
in ``torch.autograd.Function``s built from the same pairs (``function``). So:

* ``tv_fwd(x, eps, with_grad) -> (value, G)``: backward ``g·G + tv_hvp(x, g_G)``; G
  being an output, double backward reaches the Hessian-vector product through it.
  ``tv_hvp(x, v, eps)``: linear in v with H symmetric, so its backward is itself.
* ``cm_lin`` (z = A x as planes) and ``cm_adj`` (``Σ_p w_p A_p``) are each other's
  backward; ``gA_p = g_pᵀ x``.
* ``cm_meas(x) -> (|z|, z)``: backward ``cm_adj(g_z + g·z/|z|)`` (``phase_weights``);
  the fused ``cm_adj_phase`` when no graph is being built.
* ``ff_fwd`` -> ``ff_bwd`` -> closed-form torch (``fourier_double_backward``).

Depends on torch and ``metadip.reference`` only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from metadip.reference import fourier_double_backward, phase_weights

__all__ = ["FORMULAS", "Primitives", "differentiable", "function", "register"]

Setup = Callable[[Any, tuple, Any], None]
Backward = Callable[..., tuple]


@dataclass
class Primitives:
    """One backend's differentiable primitives (C++ op signatures):

    ``tv_fwd(x, eps, with_grad) -> (value (B,), G (B,C,H,W))``, ``tv_hvp(x, v, eps)``,
    ``cm_lin(x, ar, ai, seed, m, cplx, scale) -> z (P,B,m)``,
    ``cm_adj(w, ar, ai, seed, n, scale) -> (B,n)``,
    ``cm_meas(x, ar, ai, seed, m, scale) -> (|z| (B,m), z (2,B,m))``,
    ``cm_adj_phase(g, z, ar, ai, seed, n, scale) -> (B,n)`` (first order only),
    ``ff_fwd(b, height, width) -> (2k,H,W)``, ``ff_bwd(g, b, height, width) -> (k,2)``.
    ``ar`` / ``ai`` None: the seeded matrix of (seed, m or n, scale).
    """

    tv_fwd: Callable[..., tuple[Tensor, Tensor]]
    tv_hvp: Callable[..., Tensor]
    cm_lin: Callable[..., Tensor]
    cm_adj: Callable[..., Tensor]
    cm_meas: Callable[..., tuple[Tensor, Tensor]]
    cm_adj_phase: Callable[..., Tensor]
    ff_fwd: Callable[..., Tensor]
    ff_bwd: Callable[..., Tensor]


# -- total variation ---------------------------------------------------------------------


def _tv_setup(ctx, inputs, output) -> None:
    ctx.eps = inputs[1]
    ctx.save_for_backward(inputs[0], output[1])
    ctx.set_materialize_grads(False)


def _tv_backward(p: Primitives) -> Backward:
    def backward(ctx, g_val: Tensor | None, g_grad: Tensor | None):
        x, grad = ctx.saved_tensors
        out = None
        if g_val is not None:
            if grad.numel() != x.numel():
                # The forward skipped the gradient (none was expected, e.g. under a
                # functorch transform that hides requires_grad): recompute it.
                grad = p.tv_fwd(x, ctx.eps, True)[1]
            out = g_val.view(-1, 1, 1, 1) * grad
        if g_grad is not None:
            h = p.tv_hvp(x, g_grad, ctx.eps)
            out = h if out is None else out + h
        return out, None, None

    return backward


def _hvp_setup(ctx, inputs, output) -> None:
    ctx.eps = inputs[2]
    ctx.save_for_backward(inputs[0])


def _hvp_backward(p: Primitives) -> Backward:
    def backward(ctx, gg: Tensor):
        (x,) = ctx.saved_tensors
        if ctx.needs_input_grad[0]:
            raise NotImplementedError("third-order derivatives of tv are not implemented")
        return None, p.tv_hvp(x, gg, ctx.eps), None

    return backward


# -- dense or seeded measurements --------------------------------------------------------


def _lin_setup(ctx, inputs, output) -> None:
    x, ar, ai, seed, m, cplx, scale = inputs
    ctx.args = (seed, m, cplx, scale)
    ctx.n = x.shape[1]
    ctx.save_for_backward(x, ar, ai)


def _lin_backward(p: Primitives) -> Backward:
    def backward(ctx, gz: Tensor):
        x, ar, ai = ctx.saved_tensors
        seed, _, _, scale = ctx.args
        gx = p.cm_adj(gz, ar, ai, seed, ctx.n, scale) if ctx.needs_input_grad[0] else None
        gar = gz[0].t() @ x if ctx.needs_input_grad[1] else None
        gai = gz[1].t() @ x if ctx.needs_input_grad[2] else None
        return gx, gar, gai, None, None, None, None

    return backward


def _adj_setup(ctx, inputs, output) -> None:
    w, ar, ai, seed, _, scale = inputs
    ctx.args = (seed, w.shape[2], w.shape[0] == 2, scale)
    ctx.save_for_backward(w, ar, ai)


def _adj_backward(p: Primitives) -> Backward:
    def backward(ctx, gg: Tensor):
        w, ar, ai = ctx.saved_tensors
        seed, m, cplx, scale = ctx.args
        gw = p.cm_lin(gg, ar, ai, seed, m, cplx, scale) if ctx.needs_input_grad[0] else None
        gar = w[0].t() @ gg if ctx.needs_input_grad[1] else None
        gai = w[1].t() @ gg if ctx.needs_input_grad[2] else None
        return gw, gar, gai, None, None, None

    return backward


def _meas_setup(ctx, inputs, output) -> None:
    x, ar, ai, seed, _, scale = inputs
    ctx.args = (seed, x.shape[1], scale)
    ctx.save_for_backward(x, ar, ai, output[0], output[1])
    ctx.set_materialize_grads(False)


def _meas_backward(p: Primitives) -> Backward:
    def backward(ctx, g_y: Tensor | None, g_z: Tensor | None):
        x, ar, ai, y, z = ctx.saved_tensors
        seed, n, scale = ctx.args
        none = (None,) * 5
        if g_y is None and g_z is None:
            return (None, *none)
        a_grad = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        if g_z is None and not torch.is_grad_enabled() and not a_grad:
            return (p.cm_adj_phase(g_y, z, ar, ai, seed, n, scale), *none)
        w = phase_weights(g_y, y, z, g_z)
        gx = p.cm_adj(w, ar, ai, seed, n, scale) if ctx.needs_input_grad[0] else None
        gar = w[0].t() @ x if ctx.needs_input_grad[1] else None
        gai = w[1].t() @ x if ctx.needs_input_grad[2] else None
        return gx, gar, gai, None, None, None

    return backward


# -- Fourier features --------------------------------------------------------------------


def _ff_setup(ctx, inputs, output) -> None:
    ctx.hw = (inputs[1], inputs[2])
    ctx.save_for_backward(inputs[0])


def _ff_backward(p: Primitives) -> Backward:
    def backward(ctx, g: Tensor):
        (b,) = ctx.saved_tensors
        return p.ff_bwd(g.contiguous(), b, *ctx.hw), None, None

    return backward


def _ffb_setup(ctx, inputs, output) -> None:
    ctx.hw = (inputs[2], inputs[3])
    ctx.save_for_backward(inputs[0], inputs[1])


def _ffb_backward(p: Primitives) -> Backward:
    def backward(ctx, gg: Tensor):
        g, b = ctx.saved_tensors
        cot_g, cot_b = fourier_double_backward(gg, g, b, *ctx.hw)
        return cot_g, cot_b, None, None

    return backward


# The primitives with an autograd formula: name -> (setup_context, backward factory).
FORMULAS: dict[str, tuple[Setup, Callable[[Primitives], Backward]]] = {
    "tv_fwd": (_tv_setup, _tv_backward),
    "tv_hvp": (_hvp_setup, _hvp_backward),
    "cm_lin": (_lin_setup, _lin_backward),
    "cm_adj": (_adj_setup, _adj_backward),
    "cm_meas": (_meas_setup, _meas_backward),
    "ff_fwd": (_ff_setup, _ff_backward),
    "ff_bwd": (_ffb_setup, _ffb_backward),
}


def register(ops: Primitives) -> None:
    """Attaches the formulas to a backend whose primitives are ``torch.library``
    operators (``register_autograd``); their backward passes call ``ops`` again."""
    for name, (setup, backward) in FORMULAS.items():
        torch.library.register_autograd(getattr(ops, name), backward(ops), setup_context=setup)


def function(name: str, forward: Callable[..., Any], table: Primitives) -> type:
    """A ``torch.autograd.Function`` running the raw kernel ``forward`` with the formula
    of primitive ``name``, whose backward calls ``table`` (the backend's differentiable
    primitives, typically these functions' ``apply``)."""
    setup, backward = FORMULAS[name]
    return type(
        f"_{name}",
        (torch.autograd.Function,),
        {
            "forward": staticmethod(forward),
            "setup_context": staticmethod(setup),
            "backward": staticmethod(backward(table)),
        },
    )


def differentiable(
    raw: dict[str, Callable[..., Any]], cm_adj_phase: Callable[..., Any]
) -> Primitives:
    """A backend's ``Primitives`` from its raw (non-differentiable) kernels, one per name
    of ``FORMULAS``: each becomes a ``function`` whose backward calls the returned table,
    so every order of derivative stays on the backend. ``cm_adj_phase`` is first-order
    only and is used as it is."""
    if set(raw) != set(FORMULAS):
        raise ValueError(f"raw kernels must be exactly {sorted(FORMULAS)}, got {sorted(raw)}")
    # The Functions' backward passes close over the table, so it exists before its entries.
    table = Primitives(**dict.fromkeys(f.name for f in fields(Primitives)))
    for name, forward in raw.items():
        setattr(table, name, function(name, forward, table).apply)
    table.cm_adj_phase = cm_adj_phase
    return table
