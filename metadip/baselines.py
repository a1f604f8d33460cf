"""Baselines the paper compares against: BM3D and PnP-ADMM with a plug-in denoiser.

Vanilla DIP is not here: ``reconstruct(y, op, init="random", steps=N)`` already is the
original recipe (Adam 0.01, input jitter 1/30, EMA 0.99); MetaSIREN is
``reconstruct`` with a SIREN init file. Both are run by ``metadip.evaluate``.

Images are ``(C, H, W)`` float tensors in [0, 1]; noise levels are on the [0, 1] scale.

PnP-ADMM (Venkatakrishnan et al.; Chan et al.) solves ``min_x f(x) + λ R(x)`` with
``f(x) = ½‖A(x) − y‖²`` by alternating

    x ← argmin_x f(x) + ρ/2 ‖x − (z − u)‖²      (data step)
    z ← D(x + u; σ_d)                            (the denoiser replaces the prox of R)
    u ← u + x − z

For a linear A the data step is the linear system ``(AᵀA + ρI) x = Aᵀy + ρ(z − u)``,
solved by warm-started conjugate gradients (no n×n matrix is formed, so 128×128
colour CS stays affordable). For a non-linear A (phase retrieval, ``|Ax|``) it is
approximated by a fixed number of (sub)gradient steps of size ``1/(L + ρ)``, with L a
power-iteration estimate of ‖JᵀJ‖ at the starting point.

The denoisers (BM3D, the shipped DnCNN, your own) are ``metadip.denoisers``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from metadip.denoisers import Denoiser
from metadip.operators import Blur, Denoise, Inpainting, Operator

__all__ = [
    "ADMM_GRID",
    "AdmmParams",
    "conjugate_gradient",
    "grid_search",
    "pnp_admm",
    "start_point",
]

# The paper tunes PnP-ADMM on a 3×3×3 grid: denoiser strength σ_d (0-255 scale),
# penalty ρ and iteration count. The values span the range where the fixed point
# moves from data-dominated (small σ_d, large ρ) to prior-dominated.
ADMM_GRID: dict[str, tuple[float, ...]] = {
    "strength": (10.0, 25.0, 50.0),
    "rho": (0.1, 0.5, 2.0),
    "iters": (4, 8, 16),
}


@dataclass(frozen=True)
class AdmmParams:
    """One PnP-ADMM setting: denoiser strength (0-255 scale), penalty ρ, iterations."""

    strength: float
    rho: float
    iters: int

    def to_dict(self) -> dict[str, float]:
        return {"strength": self.strength, "rho": self.rho, "iters": self.iters}


# -- PnP-ADMM -----------------------------------------------------------------------------


def conjugate_gradient(
    apply: Callable[[Tensor], Tensor], b: Tensor, x0: Tensor, iters: int = 20, tol: float = 1e-6
) -> Tensor:
    """Solves ``apply(x) = b`` for a symmetric positive definite ``apply``, per batch item.

    ``b``, ``x0``: ``(B, ...)``; the inner products are taken per item, so a batch of
    independent systems (e.g. colour channels) converges independently. Stops after
    ``iters`` iterations or when every residual norm is below ``tol · ‖b‖``.
    """

    def dot(a: Tensor, c: Tensor) -> Tensor:
        return (a * c).flatten(1).sum(1).view(-1, *([1] * (a.dim() - 1)))

    x = x0.clone()
    r = b - apply(x)
    p = r.clone()
    rs = dot(r, r)
    stop = (tol * dot(b, b).sqrt()) ** 2
    for _ in range(iters):
        if bool((rs <= stop).all()):
            break
        ap = apply(p)
        alpha = rs / dot(p, ap).clamp_min(1e-30)
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = dot(r, r)
        p = r + (rs_new / rs.clamp_min(1e-30)) * p
        rs = rs_new
    return x


def start_point(y: Tensor, op: Operator) -> Tensor:
    """A crude estimate of x from y ``(B, *out_shape)``: ``(B, *in_shape)`` in [0, 1].

    Linear operators: the back-projection ``Aᵀy`` (unbiased for Gaussian CS, where
    E[AᵀA] = I; exact for denoising). Others (phase retrieval): a constant image per
    channel with the energy the magnitudes imply, ``E|a·x|² = ‖x‖²/m`` + σ², i.e.
    ``c = sqrt(max(mean(y²) − σ², 0) · m / n)``.
    """
    if op.linear:
        return op.adjoint(y).clamp(0, 1)
    b = y.shape[0]
    c = op.in_shape[0]
    n_per = math.prod(op.in_shape) // c
    yy = y.reshape(b, c, -1) if y[0].numel() % c == 0 else y.reshape(b, 1, -1)
    m_per = yy.shape[-1]
    energy = (yy.pow(2).mean(-1) - op.sigma**2).clamp_min(0) * m_per / n_per
    level = energy.sqrt().clamp(0, 1)
    return level.view(b, -1, 1, 1).expand(b, c, *op.in_shape[1:]).contiguous()


def _lipschitz(op: Operator, x: Tensor, iters: int = 8) -> float:
    """‖JᵀJ‖ of the forward map at x by power iteration.

    J v by a forward difference, Jᵀ(·) by autograd: the fused measurement ops have no
    forward-mode derivative, and a step-size estimate needs no more accuracy.
    """
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    v = v.to(x.device)
    eps = 1e-2 * max(float(x.norm()), 1.0) / math.sqrt(x.numel())
    with torch.no_grad():
        fx = op.forward(x)
    lam = 1.0
    for _ in range(iters):
        v = v / v.norm()
        with torch.no_grad():
            jv = (op.forward(x + eps * v) - fx) / eps
        with torch.enable_grad():
            xg = x.detach().requires_grad_()
            (w,) = torch.autograd.grad(op.forward(xg), xg, grad_outputs=jv)
        lam = float((w * v).sum())
        v = w
    return max(lam, 1e-6)


def pnp_admm(
    y: Tensor,
    op: Operator,
    denoiser: Denoiser,
    strength: float,
    rho: float,
    iters: int,
    *,
    record: Iterable[int] | None = None,
    cg_iters: int = 15,
    grad_steps: int = 10,
) -> dict[int, Tensor]:
    """PnP-ADMM (see the module doc) on one measurement ``y`` (``op.out_shape``).

    strength: denoiser σ_d on the 0-255 scale; rho: penalty ρ; iters: ADMM iterations.
    ``record``: iteration counts (≤ iters) whose z-iterate to return as well, so one
    run yields every iteration count of a grid. Returns ``{k: (C, H, W) image}`` for
    ``k`` in ``record ∪ {iters}``.
    """
    if iters < 1 or rho <= 0 or strength <= 0:
        raise ValueError(
            f"pnp_admm needs iters >= 1, rho > 0, strength > 0; got {iters}, {rho}, {strength}"
        )
    if tuple(y.shape) != op.out_shape:
        raise ValueError(f"y has shape {tuple(y.shape)}, the operator measures {op.out_shape}")
    marks = {int(k) for k in (record or ())} | {iters}
    if max(marks) > iters or min(marks) < 1:
        raise ValueError(f"record must lie in [1, {iters}], got {sorted(marks)}")
    sigma_d = strength / 255.0
    yb = y[None]
    x = start_point(yb, op)
    z = x.clone()
    u = torch.zeros_like(x)
    if op.linear:
        aty = op.adjoint(yb)
        c = op.in_shape[0]

        def normal(v: Tensor) -> Tensor:
            # Channels are independent systems when A acts per channel; solving them as
            # separate batch items lets CG converge per channel.
            w = v.reshape(1, *op.in_shape)
            out = op.adjoint(op.forward(w)) + rho * w
            return out.reshape(v.shape)

        def split(t: Tensor) -> Tensor:
            return t.reshape(c, 1, *op.in_shape[1:]) if _channelwise(op) else t

        def solve(v: Tensor, x0: Tensor) -> Tensor:
            b = aty + rho * v
            if _channelwise(op):
                sol = conjugate_gradient(
                    lambda s: split(normal(s.reshape(1, *op.in_shape))),
                    split(b),
                    split(x0),
                    cg_iters,
                )
                return sol.reshape(1, *op.in_shape)
            return conjugate_gradient(normal, b, x0, cg_iters)

    else:
        lip = _lipschitz(op, x)
        lr = 1.0 / (lip + rho)

        def solve(v: Tensor, x0: Tensor) -> Tensor:
            xk = x0
            for _ in range(grad_steps):
                with torch.enable_grad():
                    xg = xk.detach().requires_grad_()
                    loss = 0.5 * (op.forward(xg) - yb).pow(2).sum()
                    (g,) = torch.autograd.grad(loss, xg)
                xk = xk - lr * (g + rho * (xk - v))
            return xk.detach()

    out: dict[int, Tensor] = {}
    with torch.no_grad():
        for k in range(1, iters + 1):
            x = solve(z - u, x)
            z = denoiser((x + u).clamp(-0.5, 1.5), sigma_d).to(x.dtype)
            u = u + x - z
            if k in marks:
                out[k] = z[0].clamp(0, 1).clone()
    return out


def _channelwise(op: Operator) -> bool:
    """Whether channels are independent under op (then CG runs per channel)."""
    # Only operators known to act per channel: for a channel-mixing A, per-channel CG step
    # sizes would be wrong.
    return bool(getattr(op, "channelwise", False)) or isinstance(op, (Denoise, Inpainting, Blur))


# -- grid search --------------------------------------------------------------------------


def grid_search(
    score: Callable[[float, float, Sequence[int]], dict[int, float]],
    grid: dict[str, Sequence[float]] | None = None,
) -> tuple[AdmmParams, list[dict[str, float]]]:
    """The grid cell with the highest score.

    ``score(strength, rho, iters_list) -> {iters: score}`` evaluates every iteration
    count of one (strength, rho) pair at once (one ADMM run records all of them);
    higher is better (e.g. mean PSNR on the tuning split). Returns the best
    ``AdmmParams`` and every cell as ``{"strength", "rho", "iters", "score"}``.
    Ties keep the first cell in grid order.
    """
    grid = ADMM_GRID if grid is None else grid
    missing = {"strength", "rho", "iters"} - set(grid)
    if missing:
        raise ValueError(f"grid needs the keys strength, rho, iters; missing {sorted(missing)}")
    iters = sorted(int(k) for k in grid["iters"])
    cells: list[dict[str, float]] = []
    best: tuple[float, AdmmParams] | None = None
    for strength, rho in itertools.product(grid["strength"], grid["rho"]):
        scores = score(float(strength), float(rho), iters)
        for k in iters:
            if k not in scores:
                raise ValueError(f"score() returned no value for iters={k} (got {sorted(scores)})")
            s = float(scores[k])
            cells.append({"strength": float(strength), "rho": float(rho), "iters": k, "score": s})
            if math.isfinite(s) and (best is None or s > best[0]):
                best = (s, AdmmParams(float(strength), float(rho), k))
    if best is None:
        raise ValueError("every grid cell scored NaN/inf; nothing to choose")
    return best[1], cells
