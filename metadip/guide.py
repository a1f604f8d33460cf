"""Educated DIP's network input: the guide image computed from the measurement.

An image-input initialization (``NetConfig(input="image")``) does not start from fixed
noise: its network reads the operator's adjoint of y (the noisy image itself for
denoising) or, with ``guide="tv"``, a TV-regularized estimate (a classical warm start:
least squares for CS and deblurring, amplitude flow for phase retrieval; at m/n = 1/4 it
is already better than 1000 steps of DIP), repeated to the network's channels for a gray
problem, and optionally a constant map of the noise level (as FFDNet does) and a
coverage map ``Aᵀ A 1`` (the observation mask for inpainting).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from metadip.netconfig import NetConfig
from metadip.operators import gram_norm, require_linear
from metadip.reference import forward_differences

__all__ = [
    "check_guide_operator",
    "coverage",
    "guide_input",
    "noise_levels",
    "tv_estimate",
    "tv_prox",
]

POWER_ITERS = 15  # power iterations for ‖AᵀA‖ (FISTA's step)
MARGIN = 1.1  # the power iteration approaches the norm from below
PROX_ITERS = 10  # dual steps per TV prox, warm-started from the previous prox's dual


def noise_levels(op: Any, batch: int, like: Tensor) -> Tensor:
    """Each problem's noise std ``(B,)``: one value per operator of a ``Stacked`` batch.
    Built by fill kernels on ``like``'s device, never copied from the host: CUDA-graph
    capture (which computes the guide inside the graph) rejects a host-to-device copy."""
    ops = getattr(op, "ops", None) or [op] * batch
    values = [float(o.sigma or 0.0) for o in ops]
    if len(set(values)) == 1:
        return like.new_full((len(values),), values[0])
    return torch.stack([like.new_full((), v) for v in values])


def coverage(op: Any, like: Tensor) -> Tensor:
    """``Aᵀ A 1`` for images like ``like`` ``(B, C, H, W)``: how strongly each pixel is
    observed (the 0/1 mask for inpainting, ones for denoising)."""
    return op.adjoint(op.forward(torch.ones_like(like)))


def check_guide_operator(config: NetConfig, op: Any) -> None:
    """Raises unless ``op`` can make ``config``'s guide: ``Aᵀy`` and the coverage map need
    an adjoint; the TV estimate needs a linear operator or a non-linear one with a start
    estimate (phase retrieval)."""
    if config.guide == "tv" and not config.coverage and getattr(op, "has_start", False):
        return
    require_linear(
        op,
        "this initialization takes the operator's adjoint of y (A^T y) as its network "
        "input (Educated DIP)",
        "use an init with a noise input (e.g. init='random' or the MetaDIP default) for "
        "this operator",
    )


def _grad_adjoint(ph: Tensor, pw: Tensor) -> Tensor:
    """``∇ᵀ(p_h, p_w)`` (minus the divergence) of ``reference.forward_differences``; the last
    row of p_h and column of p_w, which the differences never fill, are ignored."""
    ph, pw = ph[..., :-1, :], pw[..., :, :-1]
    return (
        F.pad(ph, (0, 0, 1, 0))
        - F.pad(ph, (0, 0, 0, 1))
        + F.pad(pw, (1, 0, 0, 0))
        - F.pad(pw, (0, 1, 0, 0))
    )


def _next_t(t: float) -> float:
    """FISTA's momentum sequence: ``t_{k+1} = (1 + √(1 + 4 t_k²)) / 2``."""
    return (1 + (1 + 4 * t * t) ** 0.5) / 2


def tv_prox(
    b: Tensor, mu: Tensor, iters: int, dual: tuple[Tensor, Tensor] | None = None
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """``argmin_{x∈[0,1]} ½‖x − b‖² + μ TV(x)``, isotropic unsmoothed TV per channel, by
    ``iters`` steps of FGP (Beck & Teboulle 2009: accelerated projected gradient on the dual
    field ``w``, ``|w_ij| ≤ 1``, ``x = clamp(b − μ∇ᵀw)``): b ``(B, C, H, W)``, μ a tensor
    broadcastable to it (≥ 0). Returns x and the dual, which warm-starts the next call."""
    w = dual if dual is not None else (torch.zeros_like(b), torch.zeros_like(b))
    # Dual step 1 / (8μ) (8 ≥ ‖∇‖²); μ = 0 leaves the dual at 0, so x = clamp(b).
    inv = torch.where(mu > 0, 0.125 / mu, torch.zeros_like(mu))
    r, t = w, 1.0
    for _ in range(iters):
        gh, gw = forward_differences((b - mu * _grad_adjoint(*r)).clamp(0, 1))
        nh, nw = r[0] + gh * inv, r[1] + gw * inv
        norm = (nh * nh + nw * nw).sqrt().clamp_min(1)
        w_next = (nh / norm, nw / norm)
        t_next = _next_t(t)
        r = tuple(a + (t - 1) / t_next * (a - c) for a, c in zip(w_next, w, strict=True))
        w, t = w_next, t_next
    return (b - mu * _grad_adjoint(*w)).clamp(0, 1), w


def tv_estimate(
    op: Any, y: Tensor, weight: float = 1.0, iters: int = 50, progress: bool = False
) -> Tensor:
    """``argmin_{x∈[0,1]} ½‖F(x) − y‖² + λ TV(x)`` by ``iters`` FISTA steps from
    ``op.estimate_start(y)`` (``clamp(A⁺y)``, else ``clamp(Aᵀy)``, for a linear operator
    ``F = A``): y ``(B, *out_shape)`` -> ``(B, C, H, W)``. Per problem
    ``λ = weight · max(σ, 1/255)`` (σ the operator's noise std) and step
    ``s = 1 / (1.1‖AᵀA‖)`` (``operators.gram_norm``);
    each step is a gradient step on the data term, then the exact prox of ``sλ TV`` with
    the box (``tv_prox``, ``PROX_ITERS`` warm-started dual steps). For phase retrieval
    ``F(x) = |Ax|`` this is TV-regularized amplitude flow from a constant image, a
    non-convex problem that natural images' large mean makes benign. No gradient flows
    through it. ``progress`` shows a bar over the steps (each applies A and Aᵀ once)."""
    with torch.no_grad():
        x = op.estimate_start(y)
        lam = weight * noise_levels(op, x.shape[0], x).clamp_min(1 / 255)
        step = 1 / (MARGIN * gram_norm(op, x, POWER_ITERS))
        lam, step = (t.view(-1, *[1] * (x.dim() - 1)) for t in (lam, step))
    z, t, dual = x, 1.0, None
    for _ in tqdm(range(iters), desc="TV warm start", leave=False, disable=not progress):
        with torch.enable_grad():
            zg = z.detach().requires_grad_()
            # residual_sq: one read of a dense matrix for the value and the gradient.
            (g,) = torch.autograd.grad(0.5 * op.residual_sq(zg, y).sum(), zg)
        with torch.no_grad():
            x_next, dual = tv_prox(zg.detach() - step * g, step * lam, PROX_ITERS, dual)
            t_next = _next_t(t)
            z = x_next + (t - 1) / t_next * (x_next - x)
        x, t = x_next, t_next
    return x.detach()


def guide_input(config: NetConfig, op: Any, y: Tensor, progress: bool = False) -> Tensor:
    """Educated DIP's guide for ``y`` ``(B, *out_shape)``: ``Aᵀy`` (the noisy image itself
    for denoising) repeated to the network's channels for a gray problem, then, when
    ``config.noise_level``, a constant map of the operator's noise std, and when
    ``config.coverage``, ``Aᵀ A 1`` averaged over channels:
    ``(B, config.guide_channels, H, W)``. With ``config.guide == "tv"`` the image is
    ``tv_estimate(op, y, config.guide_weight, config.guide_iters, progress)``. Needs a
    linear operator, or for the TV estimate one with a start estimate (phase retrieval)."""
    check_guide_operator(config, op)
    if config.guide == "tv":
        g = tv_estimate(op, y, config.guide_weight, config.guide_iters, progress)
    else:
        g = op.adjoint(y)
    parts = [g.expand(-1, config.out_channels, -1, -1) if g.shape[1] == 1 else g]
    if config.noise_level:
        level = noise_levels(op, g.shape[0], g).view(-1, 1, 1, 1)
        parts.append(level.expand(-1, 1, *g.shape[2:]))
    if config.coverage:
        parts.append(coverage(op, g).mean(dim=1, keepdim=True))
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
