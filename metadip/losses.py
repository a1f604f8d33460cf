"""The inner loss and its checks: the data fit, and Stein's unbiased risk estimate.

``mse``: ``L_b = mean((op(x_b) − y_b)²) + λ_TV · tv(x_b) / (C·H·W)`` per image.
``sure`` (denoising ``y = x + σ e`` with an image-input network ``x = f(y)``):
``SURE_b = mean((x_b − y_b)²) − σ² + 2σ² div_y f(y)_b / n``, an unbiased estimate of
``mean((x_b − x_true)²)``: minimizing it adapts the network to the image without
fitting the noise, which the plain data fit does. For inpainting (``y = M ⊙ (x + σ e)``,
M a 0/1 mask) the same holds on the observed pixels: ``mean((M ⊙ x_b − y_b)²) −
σ² |M| / n + 2σ² div_M / n``, the divergence taken along the observed pixels only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from metadip import functional
from metadip.guide import coverage, noise_levels

__all__ = ["LOSSES", "SURE_TASKS", "check_loss", "fit_losses", "sure_term", "sure_weights"]

LOSSES = ("mse", "sure")


def fit_losses(
    x: Tensor,
    y: Tensor,
    op: Any,
    tv_weight: Tensor | float,
    tv_eps: float,
    first_order: bool = False,
) -> Tensor:
    """Per image b: ``mean((op(x_b) - y_b)^2) + tv_weight · tv(x_b) / (C·H·W)``, ``(B,)``.

    ``first_order``: the caller takes no second derivative, so the operator's
    ``residual_sq`` may give value and gradient in one pass (dense compressive sensing
    and phase retrieval read their matrix once instead of twice)."""
    fused = first_order and getattr(op, "fused_residual", False) and y.shape[0] == x.shape[0]
    if fused:
        fit = op.residual_sq(x, y) / y[0].numel()
    else:
        fit = (op.forward(x) - y).pow(2).flatten(1).mean(dim=1)
    reg = functional.tv(x, tv_eps) / x[0].numel()
    return fit + tv_weight * reg


# The tasks whose operator is a 0/1 mask (the identity for denoising), where SURE holds.
SURE_TASKS = ("denoise", "inpaint")


def check_loss(loss: str, op: Any) -> None:
    """Raises unless ``op`` suits the inner ``loss``: SURE needs denoising or inpainting
    with noise."""
    if loss == "sure" and (getattr(op, "task", None) not in SURE_TASKS or not op.sigma > 0):
        raise ValueError(
            f"this initialization fits with loss 'sure' (Stein's unbiased risk estimate), "
            f"which needs a denoising or inpainting operator with sigma > 0; got "
            f"{type(op).__name__} (task {getattr(op, 'task', None)!r}, sigma "
            f"{getattr(op, 'sigma', None)})"
        )


def sure_weights(op: Any, like: Tensor) -> tuple[Tensor, Tensor]:
    """What SURE needs of the operator, for images like ``like`` ``(B, C, H, W)``: the
    observed pixels ``M = Aᵀ A 1`` (same shape) and each problem's σ² ``(B,)``. They
    depend on the operator alone, so a fit computes them once (``inner.prepare``)."""
    return coverage(op, like), noise_levels(op, like.shape[0], like).pow(2)


def sure_term(
    apply: Callable[[Tensor], Tensor],
    inp: Tensor,
    x: Tensor,
    weights: tuple[Tensor, Tensor],
    channels: int,
    eps: float,
    probe: Tensor,
) -> Tensor:
    """What turns the data fit into SURE, per image ``(B,)``: ``−σ² |M| / n + 2σ² div_M / n``
    with ``(M, σ²) = weights`` (``sure_weights``; M all ones for denoising).

    ``apply``: the network on an input like ``inp`` (whose first ``channels`` channels are
    the guide image, i.e. Aᵀy); ``x = apply(inp)``. The divergence along the observed
    pixels is estimated with one probe ``v ~ N(0, I)``, ``(1 or B, *y.shape[1:])`` (one
    shared by the batch, or one per chain), masked: ``div_M ≈ (M v)ᵀ(f(y + ε M v) −
    f(y)) / ε``."""
    mask, sigma2 = weights
    masked = probe * mask
    shift = torch.zeros_like(inp)
    shift[:, :channels] = eps * masked.expand(inp.shape[0], channels, -1, -1)
    div = (masked * (apply(inp + shift) - x)).flatten(1).sum(dim=1) / eps
    observed = mask.expand_as(x).flatten(1).sum(dim=1)
    return (-sigma2 * observed + 2 * sigma2 * div) / x[0].numel()
