"""Educated DIP's network input: the guide ``Aᵀy`` computed from the measurement.

An image-input initialization (``NetConfig(input="image")``) does not start from fixed
noise: its network reads the operator's adjoint of y (the noisy image itself for
denoising), repeated to the network's channels for a gray problem, and optionally a
constant map of the noise level (as FFDNet does) and a coverage map ``Aᵀ A 1`` (the
observation mask for inpainting).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from metadip.networks import NetConfig
from metadip.operators import require_linear

__all__ = ["check_guide_operator", "coverage", "guide_input", "noise_levels"]


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


def guide_input(config: NetConfig, op: Any, y: Tensor) -> Tensor:
    """Educated DIP's guide for ``y`` ``(B, *out_shape)``: ``Aᵀy`` (the noisy image itself
    for denoising) repeated to the network's channels for a gray problem, then, when
    ``config.noise_level``, a constant map of the operator's noise std, and when
    ``config.coverage``, ``Aᵀ A 1`` averaged over channels:
    ``(B, config.guide_channels, H, W)``. Needs a linear operator."""
    check_guide_operator(op)
    g = op.adjoint(y)
    parts = [g.expand(-1, config.out_channels, -1, -1) if g.shape[1] == 1 else g]
    if config.noise_level:
        level = noise_levels(op, g.shape[0], g).view(-1, 1, 1, 1)
        parts.append(level.expand(-1, 1, *g.shape[2:]))
    if config.coverage:
        parts.append(coverage(op, g).mean(dim=1, keepdim=True))
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
