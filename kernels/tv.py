"""Triton kernels for smoothed isotropic total variation.

Maths (per plane, forward differences, zero difference past the last row/column):
``dh = x[i+1,j] - x[i,j]``, ``dw = x[i,j+1] - x[i,j]``, ``s = sqrt(dh² + dw² + eps)``,
``tv = Σ s``. With ``u = dh/s``, ``v = dw/s`` the gradient is
``G[i,j] = -(u + v)[i,j] + u[i-1,j] + v[i,j-1]``, and the Hessian–vector product
in direction w (differences ``eh``, ``ew``) is the same stencil applied to
``du = eh/s - dh·(dh·eh + dw·ew)/s³`` and ``dv = ew/s - dw·(dh·eh + dw·ew)/s³``.

The forward pass writes the value (per-tile partial sums) and G in one sweep;
backward scales the saved G; double backward runs the HVP kernel (the autograd
wrappers are in ``autograd.py``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .launch import device_of, grid

__all__ = ["tv_forward", "tv_hvp"]


@triton.jit
def _tile(H, W, n_tiles_w, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """This program's (plane, tile), its row/column indices and the plane's offset. Tiles
    run along grid axis 0 (large images), planes along axis 1 (at most 65535)."""
    tile = tl.program_id(0)
    plane = tl.program_id(1)
    i = ((tile // n_tiles_w) * BLOCK_H + tl.arange(0, BLOCK_H))[:, None]
    j = ((tile % n_tiles_w) * BLOCK_W + tl.arange(0, BLOCK_W))[None, :]
    return plane, tile, i, j, plane.to(tl.int64) * H * W


@triton.jit
def _stencil(ptr, i, j, H, W, plane_off):
    """Loads the 7 neighbours the gradient stencil at (i, j) needs (0 outside the plane)."""
    inside = (i < H) & (j < W)
    dn = (i + 1) < H
    rt = (j + 1) < W
    up = i >= 1
    lf = j >= 1
    base = ptr + plane_off + i * W + j
    c = tl.load(base, mask=inside, other=0.0)
    d = tl.load(base + W, mask=inside & dn, other=0.0)
    r = tl.load(base + 1, mask=inside & rt, other=0.0)
    u = tl.load(base - W, mask=inside & up, other=0.0)
    ur = tl.load(base - W + 1, mask=inside & up & rt, other=0.0)
    left = tl.load(base - 1, mask=inside & lf, other=0.0)
    dl = tl.load(base + W - 1, mask=inside & dn & lf, other=0.0)
    return c, d, r, u, ur, left, dl


@triton.jit
def _diffs(c, d, r, u, ur, left, dl, i, j, H, W):
    """Forward differences at (i,j), (i-1,j) and (i,j-1); zero where they do not exist."""
    dn = (i + 1) < H
    rt = (j + 1) < W
    up = i >= 1
    lf = j >= 1
    dh = tl.where(dn, d - c, 0.0)
    dw = tl.where(rt, r - c, 0.0)
    dh_u = tl.where(up, c - u, 0.0)
    dw_u = tl.where(up & rt, ur - u, 0.0)
    dh_l = tl.where(lf & dn, dl - left, 0.0)
    dw_l = tl.where(lf, c - left, 0.0)
    return dh, dw, dh_u, dw_u, dh_l, dw_l


@triton.jit
def _fwd(
    x_ptr,
    grad_ptr,
    part_ptr,
    H,
    W,
    n_tiles_w,
    n_tiles,
    eps: tl.float64,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    plane, tile, i, j, plane_off = _tile(H, W, n_tiles_w, BLOCK_H, BLOCK_W)
    c, d, r, u, ur, left, dl = _stencil(x_ptr, i, j, H, W, plane_off)
    dh, dw, dh_u, dw_u, dh_l, dw_l = _diffs(c, d, r, u, ur, left, dl, i, j, H, W)
    # eps arrives as a double (a plain float argument is passed as fp32 on CUDA, which
    # cost float64 results 1e-9 relative error) and is rounded to the data's precision.
    eps = tl.full(dh.shape, eps, dh.dtype)
    s = tl.sqrt(dh * dh + dw * dw + eps)
    s_u = tl.sqrt(dh_u * dh_u + dw_u * dw_u + eps)
    s_l = tl.sqrt(dh_l * dh_l + dw_l * dw_l + eps)
    g = -(dh + dw) / s + dh_u / s_u + dw_l / s_l
    inside = (i < H) & (j < W)
    tl.store(grad_ptr + plane_off + i * W + j, g, mask=inside)
    partial = tl.sum(tl.sum(tl.where(inside, s, 0.0), axis=1), axis=0)
    tl.store(part_ptr + plane * n_tiles + tile, partial)


@triton.jit
def _bwd(
    x_ptr,
    w_ptr,
    out_ptr,
    H,
    W,
    n_tiles_w,
    eps: tl.float64,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    """Hessian–vector product H(x)·w, the kernel behind double backward."""
    plane, tile, i, j, plane_off = _tile(H, W, n_tiles_w, BLOCK_H, BLOCK_W)
    c, d, r, u, ur, left, dl = _stencil(x_ptr, i, j, H, W, plane_off)
    dh, dw, dh_u, dw_u, dh_l, dw_l = _diffs(c, d, r, u, ur, left, dl, i, j, H, W)
    wc, wd, wr, wu, wur, wl, wdl = _stencil(w_ptr, i, j, H, W, plane_off)
    eh, ew, eh_u, ew_u, eh_l, ew_l = _diffs(wc, wd, wr, wu, wur, wl, wdl, i, j, H, W)
    eps = tl.full(dh.shape, eps, dh.dtype)
    s = tl.sqrt(dh * dh + dw * dw + eps)
    s_u = tl.sqrt(dh_u * dh_u + dw_u * dw_u + eps)
    s_l = tl.sqrt(dh_l * dh_l + dw_l * dw_l + eps)
    k = (dh * eh + dw * ew) / (s * s * s)
    k_u = (dh_u * eh_u + dw_u * ew_u) / (s_u * s_u * s_u)
    k_l = (dh_l * eh_l + dw_l * ew_l) / (s_l * s_l * s_l)
    du = eh / s - dh * k
    dv = ew / s - dw * k
    du_u = eh_u / s_u - dh_u * k_u
    dv_l = ew_l / s_l - dw_l * k_l
    hv = -(du + dv) + du_u + dv_l
    inside = (i < H) & (j < W)
    tl.store(out_ptr + plane_off + i * W + j, hv, mask=inside)


def _check(x: Tensor, eps: float) -> None:
    if x.dim() != 4:
        raise ValueError(f"tv expects x of shape (B, C, H, W), got shape {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"tv (triton) supports float32/float64, got {x.dtype}")
    if eps <= 0:
        raise ValueError(f"tv needs eps > 0 to be differentiable everywhere, got {eps}")


def _blocks(x: Tensor) -> tuple[int, int]:
    h, w = x.shape[-2:]
    if x.is_cuda:
        return 8, 64
    # The CPU interpreter pays per program, so it gets whole planes at small sizes.
    return min(triton.next_power_of_2(h), 64), min(triton.next_power_of_2(w), 128)


def tv_forward(x: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Value ``(B,)`` and gradient ``(B, C, H, W)`` of tv at x, in one sweep."""
    _check(x, eps)
    x = x.contiguous()
    b, c, h, w = x.shape
    bh, bw = _blocks(x)
    ntw = triton.cdiv(w, bw)
    nt = triton.cdiv(h, bh) * ntw
    grad = torch.empty_like(x)
    part = torch.empty((b * c, nt), device=x.device, dtype=x.dtype)
    with device_of(x):
        _fwd[grid(nt, b * c, what="tv")](x, grad, part, h, w, ntw, nt, eps, BLOCK_H=bh, BLOCK_W=bw)
    return part.view(b, c * nt).sum(dim=1), grad


def tv_hvp(x: Tensor, v: Tensor, eps: float = 1e-6) -> Tensor:
    """Hessian of tv at x applied to v: ``(B, C, H, W)`` -> ``(B, C, H, W)``."""
    _check(x, eps)
    if v.shape != x.shape:
        raise ValueError(f"tv_hvp: v must have x's shape {tuple(x.shape)}, got {tuple(v.shape)}")
    x = x.contiguous()
    v = v.contiguous().to(x.dtype)
    b, c, h, w = x.shape
    bh, bw = _blocks(x)
    ntw = triton.cdiv(w, bw)
    nt = triton.cdiv(h, bh) * ntw
    out = torch.empty_like(x)
    with device_of(x):
        _bwd[grid(nt, b * c, what="tv_hvp")](x, v, out, h, w, ntw, eps, BLOCK_H=bh, BLOCK_W=bw)
    return out
