"""Educated DIP's network input: the guide image computed from the measurement.

An image-input initialization (``NetConfig(input="image")``) does not start from fixed
noise: its network reads the operator's adjoint of y (the noisy image itself for
denoising) or, with ``guide="tv"``, a TV-regularized least-squares estimate (a classical
warm start, which for CS at m/n = 1/4 is already better than 1000 steps of DIP),
repeated to the network's channels for a gray problem, and optionally a constant map of
the noise level (as FFDNet does) and a coverage map ``Aᵀ A 1`` (the observation mask for
inpainting).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from metadip.dispatch import tv
from metadip.networks import NetConfig
from metadip.operators import require_linear

__all__ = ["check_guide_operator", "coverage", "guide_input", "noise_levels", "tv_estimate"]

TV_EPS = 1e-4  # TV smoothing: sqrt(|∇x|² + eps), 1/100 of a grey level
POWER_ITERS = 15  # power iterations for ‖AᵀA‖ (FISTA's step), then a 10 % margin


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


def check_guide_operator(op: Any) -> None:
    """Raises unless ``op`` has an adjoint, which an Educated-DIP guide ``Aᵀy`` needs."""
    require_linear(
        op,
        "this initialization takes the operator's adjoint of y (A^T y) as its network "
        "input (Educated DIP)",
        "use an init with a noise input (e.g. init='random' or the MetaDIP default) for "
        "this operator",
    )


def _gram_norm(op: Any, like: Tensor) -> Tensor:
    """Per-problem estimate of ‖AᵀA‖ ``(B,)`` by power iteration, with a 10 % margin (the
    iteration approaches the norm from below). It starts from ones, made on ``like``'s
    device: a random start drawn on the host would be a copy CUDA-graph capture rejects."""
    v = torch.ones_like(like)
    norm = like.new_ones(like.shape[0])
    for _ in range(POWER_ITERS):
        v = op.adjoint(op.forward(v))
        norm = v.flatten(1).norm(dim=1)
        v = v / norm.clamp_min(1e-12).view(-1, *[1] * (v.dim() - 1))
    return 1.1 * norm


def tv_estimate(
    op: Any, y: Tensor, weight: float = 1.0, iters: int = 150, progress: bool = False
) -> Tensor:
    """``argmin_{x∈[0,1]} ½‖Ax − y‖² + λ TV(x)`` by ``iters`` FISTA steps from ``clamp(Aᵀy)``,
    per problem ``λ = weight · max(σ, 1/255)`` (σ the operator's noise std) and step
    ``1 / (‖AᵀA‖ + 8λ/√eps)`` (the smoothed TV's Lipschitz bound): y ``(B, *out_shape)`` ->
    ``(B, C, H, W)``. Needs a linear operator; no gradient flows through it. ``progress``
    shows a bar over the iterations (a CS solve applies A and Aᵀ ``iters`` times)."""
    check_guide_operator(op)
    with torch.no_grad():
        x = op.adjoint(y).clamp(0, 1)
        lam = weight * noise_levels(op, x.shape[0], x).clamp_min(1 / 255)
        step = 1 / (_gram_norm(op, x) + 8 * lam / TV_EPS**0.5)
        lam, step = (t.view(-1, *[1] * (x.dim() - 1)) for t in (lam, step))
    z, t = x, 1.0
    for _ in tqdm(range(iters), desc="TV warm start", leave=False, disable=not progress):
        with torch.enable_grad():
            zg = z.detach().requires_grad_()
            f = 0.5 * (op.forward(zg) - y).pow(2).sum() + (lam.flatten() * tv(zg, TV_EPS)).sum()
            (g,) = torch.autograd.grad(f, zg)
        x_next = (zg.detach() - step * g).clamp(0, 1)
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
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
    linear operator."""
    check_guide_operator(op)
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
