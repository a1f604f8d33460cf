"""Layers shared by the networks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Norm"]


class Norm(nn.Module):
    """Affine normalization with the statistics of the current input, per image and channel."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        # Group norm with one channel per group is instance norm without running
        # statistics, the same maths; its CPU kernel is 1.5-2x faster forward and
        # backward (no per-image copy of the affine parameters) and twice differentiable.
        return F.group_norm(x, x.shape[1], self.weight, self.bias, self.eps)
