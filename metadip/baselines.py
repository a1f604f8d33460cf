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

Plugging in your own denoiser (e.g. DRUNet with weights you already have; nothing is
downloaded): anything callable as ``den(x, sigma) -> x̂`` with ``x`` ``(B, C, H, W)``
works. ``load_denoiser("my_pkg.models:DRUNet", weights="drunet.pth")`` imports the
attribute, instantiates it when it is a class, loads a ``state_dict`` from the weights
file (``torch.load(..., weights_only=True)``), puts it in eval mode and wraps it so it
is called under ``torch.no_grad()``; a ``path/to/file.py:name`` spec works the same
way. A network that takes only the image (no noise level) is called as ``den(x)``.
On the command line: ``metadip eval --methods admm-bm3d --denoiser SPEC
[--denoiser-weights FILE]``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metadip.operators import Blur, Denoise, Inpainting, Operator

__all__ = [
    "ADMM_GRID",
    "AdmmParams",
    "BaselineUnavailable",
    "Denoiser",
    "bm3d_denoise",
    "bm3d_denoiser",
    "conjugate_gradient",
    "gaussian_denoiser",
    "grid_search",
    "load_denoiser",
    "pnp_admm",
    "start_point",
]

# ``den(x, sigma)``: x ``(B, C, H, W)`` in [0, 1], sigma on the [0, 1] scale -> same shape.
Denoiser = Callable[[Tensor, float], Tensor]

# The paper tunes PnP-ADMM on a 3×3×3 grid: denoiser strength σ_d (0-255 scale),
# penalty ρ and iteration count. The values span the range where the fixed point
# moves from data-dominated (small σ_d, large ρ) to prior-dominated.
ADMM_GRID: dict[str, tuple[float, ...]] = {
    "strength": (10.0, 25.0, 50.0),
    "rho": (0.1, 0.5, 2.0),
    "iters": (4, 8, 16),
}


class BaselineUnavailable(ImportError):
    """An optional dependency of a baseline is not installed."""


@dataclass(frozen=True)
class AdmmParams:
    """One PnP-ADMM setting: denoiser strength (0-255 scale), penalty ρ, iterations."""

    strength: float
    rho: float
    iters: int

    def to_dict(self) -> dict[str, float]:
        return {"strength": self.strength, "rho": self.rho, "iters": self.iters}


# -- denoisers ----------------------------------------------------------------------------


def _import_bm3d() -> Any:
    try:
        import bm3d
    except ImportError as e:
        raise BaselineUnavailable(
            "the BM3D baselines need the 'bm3d' package, which is not installed: "
            "pip install 'metadip[baselines]' (or pip install bm3d)"
        ) from e
    return bm3d


def bm3d_denoise(y: Tensor, sigma: float) -> Tensor:
    """BM3D of one ``(C, H, W)`` image with noise std ``sigma`` (the [0, 1] scale).

    Colour images go through ``bm3d_rgb`` (opponent colour transform), grey ones
    through ``bm3d``. The result is clipped to [0, 1], in y's dtype and device.
    """
    bm3d = _import_bm3d()
    if y.dim() != 3 or y.shape[0] not in (1, 3):
        raise ValueError(f"bm3d_denoise expects a (1|3, H, W) image, got {tuple(y.shape)}")
    if not sigma > 0:
        raise ValueError(f"bm3d_denoise needs a noise std > 0, got {sigma}")
    a = y.detach().cpu().double().numpy()
    if a.shape[0] == 3:
        out = bm3d.bm3d_rgb(a.transpose(1, 2, 0), float(sigma)).transpose(2, 0, 1)
    else:
        out = bm3d.bm3d(a[0], float(sigma))[None]
    out = np.clip(np.ascontiguousarray(out), 0.0, 1.0)
    return torch.from_numpy(out).to(device=y.device, dtype=y.dtype)


def bm3d_denoiser() -> Denoiser:
    """BM3D as a batched ``Denoiser`` (raises ``BaselineUnavailable`` when bm3d is missing)."""
    _import_bm3d()

    def den(x: Tensor, sigma: float) -> Tensor:
        return torch.stack([bm3d_denoise(xi, sigma) for xi in x])

    return den


def gaussian_denoiser(width: float = 1.0) -> Denoiser:
    """A cheap stand-in denoiser: Gaussian smoothing whose std (pixels) is
    ``width · sigma · 255 / 25``, i.e. stronger for noisier input. Useful for tests and
    as a sanity baseline; it needs no optional package."""

    def den(x: Tensor, sigma: float) -> Tensor:
        std = max(width * sigma * 255 / 25, 1e-3)
        r = max(1, math.ceil(3 * std))
        t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
        g = torch.exp(-(t**2) / (2 * std**2))
        g = g / g.sum()
        c = x.shape[1]
        pad = torch.nn.functional.pad(x, (r, r, r, r), mode="replicate")
        k1 = g.view(1, 1, 1, -1).expand(c, 1, 1, -1)
        k2 = g.view(1, 1, -1, 1).expand(c, 1, -1, 1)
        out = torch.nn.functional.conv2d(pad, k1, groups=c)
        return torch.nn.functional.conv2d(out, k2, groups=c)

    return den


def _import_spec(spec: str) -> Any:
    """``module.path:attr`` or ``path/to/file.py:attr`` -> the attribute."""
    if ":" not in spec:
        raise ValueError(
            f"denoiser spec must be 'module:attr' or 'file.py:attr' (or 'bm3d'), got {spec!r}"
        )
    where, attr = spec.rsplit(":", 1)
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise FileNotFoundError(f"denoiser module file {path} does not exist")
        mod_spec = importlib.util.spec_from_file_location(f"_metadip_denoiser_{path.stem}", path)
        if mod_spec is None or mod_spec.loader is None:
            raise ImportError(f"cannot import {path}")
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    if not hasattr(module, attr):
        raise AttributeError(f"{where} has no attribute {attr!r} (denoiser spec {spec!r})")
    return getattr(module, attr)


def _takes_sigma(fn: Any) -> bool:
    target = fn.forward if isinstance(fn, torch.nn.Module) else fn
    try:
        params = [
            p
            for p in inspect.signature(target).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
    except (TypeError, ValueError):
        return True
    return len(params) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


def load_denoiser(spec: str, weights: str | Path | None = None) -> Denoiser:
    """A ``Denoiser`` from ``"bm3d"``, ``"gaussian"`` or a user spec (see the module doc).

    ``weights``: a ``state_dict`` file loaded into the (instantiated) module; given
    for a spec that is not an ``nn.Module``, it is an error.
    """
    if spec == "bm3d":
        if weights is not None:
            raise ValueError("the bm3d denoiser takes no weights file")
        return bm3d_denoiser()
    if spec == "gaussian":
        return gaussian_denoiser()
    obj = _import_spec(spec)
    if inspect.isclass(obj):
        obj = obj()
    if weights is not None:
        if not isinstance(obj, torch.nn.Module):
            raise TypeError(
                f"--denoiser-weights needs a torch.nn.Module, but {spec!r} is {type(obj).__name__}"
            )
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"denoiser weights file {path} does not exist")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        obj.load_state_dict(state)
    if isinstance(obj, torch.nn.Module):
        obj.eval()
    if not callable(obj):
        raise TypeError(f"denoiser {spec!r} is not callable ({type(obj).__name__})")
    with_sigma = _takes_sigma(obj)

    def den(x: Tensor, sigma: float) -> Tensor:
        with torch.no_grad():
            out = obj(x, sigma) if with_sigma else obj(x)
        if not isinstance(out, Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"denoiser {spec!r} returned {got}, expected {tuple(x.shape)}")
        return out

    return den


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
