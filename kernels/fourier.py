"""Triton kernels for Fourier features of the pixel grid.

``out[k] = sin φ_k``, ``out[K + k] = cos φ_k`` ``(2K, H, W)`` with
``φ_k(i, j) = 2π (b_k0 · i/H + b_k1 · j/W)``; coordinates are computed from the
flat index inside the kernel, in the layout the network input concatenates.
Backward wrt b: ``∂/∂b_kd = Σ_ij 2π p_d (g_sin cos φ - g_cos sin φ)``, reduced
per tile then summed. Double backward is closed-form torch
(``metadip.reference.fourier_double_backward``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from metadip.reference import check_fourier_args

from .launch import device_of, grid

__all__ = ["fourier_backward", "fourier_forward"]


@triton.jit
def _phase(b_ptr, k, idx, H, W):
    i = idx // W
    j = idx % W
    dt = b_ptr.dtype.element_ty
    ph = i.to(dt) / H
    pw = j.to(dt) / W
    b0 = tl.load(b_ptr + 2 * k)
    b1 = tl.load(b_ptr + 2 * k + 1)
    return 6.283185307179586 * (b0 * ph + b1 * pw), ph, pw


@triton.jit
def _fwd(b_ptr, out_ptr, K, H, W, BLOCK: tl.constexpr):
    # Pixel tiles along grid axis 0, frequencies along axis 1; 64-bit plane offsets.
    k = tl.program_id(1)
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < H * W
    phi, _, _ = _phase(b_ptr, k, idx, H, W)
    hw = H * W
    tl.store(out_ptr + k.to(tl.int64) * hw + idx, tl.sin(phi), mask=mask)
    tl.store(out_ptr + (K + k).to(tl.int64) * hw + idx, tl.cos(phi), mask=mask)


@triton.jit
def _bwd(g_ptr, b_ptr, part_ptr, K, H, W, n_tiles, BLOCK: tl.constexpr):
    k = tl.program_id(1)
    tile = tl.program_id(0)
    idx = tile * BLOCK + tl.arange(0, BLOCK)
    mask = idx < H * W
    phi, ph, pw = _phase(b_ptr, k, idx, H, W)
    hw = H * W
    gs = tl.load(g_ptr + k.to(tl.int64) * hw + idx, mask=mask, other=0.0)
    gc = tl.load(g_ptr + (K + k).to(tl.int64) * hw + idx, mask=mask, other=0.0)
    t = gs * tl.cos(phi) - gc * tl.sin(phi)
    t = tl.where(mask, t, 0.0)
    base = part_ptr + (k * n_tiles + tile) * 2
    tl.store(base, 6.283185307179586 * tl.sum(t * ph, axis=0))
    tl.store(base + 1, 6.283185307179586 * tl.sum(t * pw, axis=0))


def _block(hw: int, cuda: bool) -> int:
    return 1024 if cuda else min(triton.next_power_of_2(hw), 4096)


def fourier_forward(b: Tensor, height: int, width: int) -> Tensor:
    """Features ``(2k, H, W)`` of frequencies b ``(k, 2)``."""
    check_fourier_args(b, height, width, "triton")
    b = b.contiguous()
    k = b.shape[0]
    out = torch.empty((2 * k, height, width), device=b.device, dtype=b.dtype)
    blk = _block(height * width, b.is_cuda)
    with device_of(b):
        _fwd[grid(triton.cdiv(height * width, blk), k, what="fourier_features")](
            b, out, k, height, width, BLOCK=blk
        )
    return out


def fourier_backward(g: Tensor, b: Tensor, height: int, width: int) -> Tensor:
    """Gradient wrt b ``(k, 2)`` given the features' cotangent g ``(2k, H, W)``."""
    check_fourier_args(b, height, width, "triton")
    k = b.shape[0]
    if g.shape != (2 * k, height, width):
        raise ValueError(
            f"fourier_features backward expects g of shape {(2 * k, height, width)}, "
            f"got {tuple(g.shape)}"
        )
    b = b.contiguous()
    g = g.to(b.dtype).contiguous()
    blk = _block(height * width, b.is_cuda)
    nt = triton.cdiv(height * width, blk)
    part = torch.empty((k, nt, 2), device=b.device, dtype=b.dtype)
    with device_of(b):
        _bwd[grid(nt, k, what="fourier_features backward")](
            g, b, part, k, height, width, nt, BLOCK=blk
        )
    return part.sum(dim=1)
