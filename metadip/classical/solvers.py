"""Classical solvers as unrolled, differentiable functions of their starting image.

A meta-learned classical solver (``NetConfig(solver=...)``) puts one of these after the
network: the image is ``f(φ_θ)``, ``φ_θ`` the network's output (a SIREN of the pixel
coordinates) used as the solver's starting point, and both the inner fit (the data term
‖A f(φ_θ) − y‖²) and the outer loss (f(φ_θT) against the truth) see the solved image.

``gd``: K steps of gradient descent on the data term, ``x ← x − η Aᵀ(A x − y)``.
``red``: K steps of RED (regularization by denoising, Romano et al.),
``x ← x − η (Aᵀ(A x − y) + λ (x − D(x)))``, with a denoiser D (``metadip.classical.dncnn``).

In an init (``NetConfig.solver_step``) the step is in units of ``1 / ‖AᵀA‖``
(``operators.gram_norm``, per problem), so one init is stable on any linear operator.
Both need a linear operator. Shapes: ``x0`` ``(B, C, H, W)``, ``y`` ``(B, *op.out_shape)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from metadip.netconfig import NetConfig
from metadip.operators import gram_norm, require_linear

__all__ = ["Denoiser", "check_solver_operator", "gd", "red", "solver_for"]

Denoiser = Callable[[Tensor], Tensor]


def check_solver_operator(op: Any) -> None:
    """Raises unless ``op`` has an adjoint, which the data term's gradient needs."""
    require_linear(
        op,
        "a classical-solver init runs gradient steps on ‖A x − y‖², which need the "
        "operator's adjoint",
        "use a DIP init (e.g. init='default' or 'random') for this operator",
    )


def _check(iters: int, step: float | Tensor) -> None:
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
        raise ValueError(f"solver iterations must be an integer >= 0, got {iters!r}")
    # Once per solver, not per step: a tensor step's check syncs with the device.
    step_t = torch.as_tensor(step)
    if not bool(torch.all(torch.isfinite(step_t) & (step_t > 0))):
        raise ValueError(
            f"the solver step must be finite and > 0 (an operator with ‖AᵀA‖ = 0 gives an "
            f"infinite one), got {step}"
        )


def _iterate(
    x0: Tensor,
    y: Tensor,
    op: Any,
    iters: int,
    step: float | Tensor,
    prior: Callable[[Tensor], Tensor] | None,
) -> Tensor:
    """``iters`` steps ``x ← x − step · (Aᵀ(A x − y) + prior(x))``, unchecked."""
    x = x0
    for _ in range(iters):
        grad = op.adjoint(op.forward(x) - y)
        if prior is not None:
            grad = grad + prior(x)
        x = x - step * grad
    return x


def _red_prior(weight: float, denoiser: Denoiser) -> Callable[[Tensor], Tensor]:
    if not weight >= 0:
        raise ValueError(f"the RED weight must be >= 0, got {weight}")
    return lambda x: weight * (x - denoiser(x))


def gd(x0: Tensor, y: Tensor, op: Any, iters: int, step: float | Tensor) -> Tensor:
    """``iters`` gradient steps ``x ← x − step · Aᵀ(A x − y)`` from ``x0``: ``(B, C, H, W)``;
    ``step`` a float or one per item ``(B, 1, 1, 1)``."""
    _check(iters, step)
    check_solver_operator(op)
    return _iterate(x0, y, op, iters, step, None)


def red(
    x0: Tensor,
    y: Tensor,
    op: Any,
    iters: int,
    step: float | Tensor,
    weight: float,
    denoiser: Denoiser,
) -> Tensor:
    """``iters`` RED steps ``x ← x − step · (Aᵀ(A x − y) + weight · (x − D(x)))`` from
    ``x0``: ``(B, C, H, W)``."""
    _check(iters, step)
    check_solver_operator(op)
    return _iterate(x0, y, op, iters, step, _red_prior(weight, denoiser))


def solver_for(config: NetConfig, op: Any, y: Tensor) -> Callable[[Tensor], Tensor] | None:
    """The solver of ``config`` bound to one problem (``x0 -> x``), or None without one."""
    if config.solver == "none":
        return None
    check_solver_operator(op)
    # The configured step is in units of 1 / ‖AᵀA‖, so one init is stable on any operator
    # (a mask has norm 1; Gaussian CS at m/n = 1/4 about 9).
    with torch.no_grad():
        norm = gram_norm(op, op.adjoint(y))
    step = config.solver_step / norm.view(-1, 1, 1, 1)
    iters = config.solver_iters
    _check(iters, step)  # here, once per problem, so the fit's steps never sync
    prior = None
    if config.solver == "red":
        from metadip.classical.dncnn import shipped_denoiser  # weights loaded only when used

        prior = _red_prior(config.solver_weight, shipped_denoiser(y.device, y.dtype))
    return lambda x0: _iterate(x0, y, op, iters, step, prior)
