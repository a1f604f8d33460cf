"""Layers shared by the networks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Norm", "channel_cat", "to_fast_layout"]


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


def to_fast_layout(x: Tensor) -> Tensor:
    """``x`` in the memory layout the convolutions run fastest in: channels-last for
    float32 images ``(B, C, H, W)`` on the CPU, unchanged otherwise.

    oneDNN computes in a channels-last-like blocked layout: an NCHW tensor is reordered
    on the way into and out of every convolution, forward and backward, and the
    reflection padding, upsampling and activations between them then run on layouts
    they are slow on. Same maths, values agree to float32 rounding. Other dtypes and
    devices keep NCHW: float64 convolutions do not use oneDNN, and the GPU layout is not
    measured.
    """
    if x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4:
        # contiguous(memory_format=channels_last) by way of NHWC; unlike it, runs under vmap.
        return x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    return x


class _ChannelCat(torch.autograd.Function):
    """``torch.cat([a, b], dim=1)`` whose gradients come back dense, in the gradient's
    layout (channels-last for the fast layout).

    Autograd's own ``cat`` hands each input a channel slice of the output gradient, and
    the CPU kernels downstream (bilinear upsampling's backward above all: 2.9 against
    0.3 ms at 32×128², one thread) are slow on such strided slices. Linear, so the
    backward written in differentiable ops is its own double backward.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(a: Tensor, b: Tensor) -> Tensor:
        return torch.cat([a, b], dim=1)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.split = inputs[0].shape[1]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        # clone() lays a strided slice out in the layout its strides suggest (channels-last
        # here), and unlike contiguous(memory_format=...) it also runs under vmap.
        return grad[:, : ctx.split].clone(), grad[:, ctx.split :].clone()


def channel_cat(a: Tensor, b: Tensor) -> Tensor:
    """``(B, Ca, H, W), (B, Cb, H, W) -> (B, Ca + Cb, H, W)`` for networks in the fast
    layout (``to_fast_layout``): the same as ``torch.cat``, with gradients laid out for
    the channels-last kernels."""
    return _ChannelCat.apply(a, b)
