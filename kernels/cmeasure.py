"""Triton kernels for complex (and real) Gaussian measurements.

``z = A x`` with A = A_r + i·A_i ``(m, n)`` stored as planes, x ``(B, n)`` real, z kept
as planes ``(P, B, m)`` (P = 2 complex, 1 real); the measurement is ``y = |z|``
``(B, m)``. Backward of y: ``Re Aᴴ(g ⊙ z/|z|) = A_rᵀ(g z_r/|z|) + A_iᵀ(g z_i/|z|)``
with 0 where |z| = 0.

Seeded mode: A is never stored. Entry (row i, column j) is a Box–Muller pair of
Philox4x32-10 draws keyed by the seed with counter (j, i, 0, 0), times ``scale``
(csrc/common.h gives the exact recipe; the C++ and torch versions follow it). ``scale``
is passed as a double and rounded to the data's precision, as in C++.

``_fwd`` fuses both products with the magnitude epilogue; ``_bwd`` fuses the
phase weights into the adjoint product. Their autograd wrappers (``autograd.py``, with
the formulas of ``metadip.autodiff``) make z = Ax and w -> Aᵀw each other's backward,
so every order of derivative is available.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .launch import device_of, grid

__all__ = ["adjoint", "adjoint_phase", "linear", "materialize"]


@triton.jit
def _gauss(seed, rows, cols):
    """Standard normal pair (float32) for entries (rows, cols); see csrc/common.h."""
    c0 = (cols + rows * 0).to(tl.uint32)
    c1 = (rows + cols * 0).to(tl.uint32)
    zero = c0 * 0
    r0, r1, _, _ = tl.philox(seed, c0, c1, zero, zero)
    u0 = ((r0 >> 9).to(tl.float32) + 0.5) * 1.1920928955078125e-07
    u1 = ((r1 >> 9).to(tl.float32) + 0.5) * 1.1920928955078125e-07
    rad = tl.sqrt(-2.0 * tl.log(u0))
    th = 6.283185307179586 * u1
    return rad * tl.cos(th), rad * tl.sin(th)


@triton.jit
def _fwd(
    x_ptr,
    ar_ptr,
    ai_ptr,
    z_ptr,
    zi_ptr,
    y_ptr,
    B,
    M,
    N,
    seed,
    scale: tl.float64,
    SEEDED: tl.constexpr,
    PLANES: tl.constexpr,
    MAG: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # Rows of A along grid axis 0, batch tiles along axis 1; offsets into A and the
    # outputs in 64 bits (m·n reaches 2³¹ for large problems).
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    dt = x_ptr.dtype.element_ty
    sc = tl.full((1, 1), scale, dt)  # the double scale, rounded to the data's precision
    acc_r = tl.zeros((BLOCK_B, BLOCK_M), dtype=dt)
    acc_i = tl.zeros((BLOCK_B, BLOCK_M), dtype=dt)
    for k0 in range(0, N, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        kmask = offs_k < N
        xt = tl.load(
            x_ptr + offs_b[:, None].to(tl.int64) * N + offs_k[None, :],
            mask=(offs_b[:, None] < B) & kmask[None, :],
            other=0.0,
        )
        # A tiles are read transposed, (BLOCK_K, BLOCK_M), so no in-register transpose.
        if SEEDED:
            gr, gi = _gauss(seed, offs_m[None, :], offs_k[:, None])
            a_r = gr.to(dt) * sc
            a_i = gi.to(dt) * sc
        else:
            amask = kmask[:, None] & (offs_m[None, :] < M)
            a_off = offs_m[None, :].to(tl.int64) * N + offs_k[:, None]
            a_r = tl.load(ar_ptr + a_off, mask=amask, other=0.0)
            if PLANES == 2:
                a_i = tl.load(ai_ptr + a_off, mask=amask, other=0.0)
        # out_dtype: triton <= 3.6 defaults it to float32 and rejects a float64 accumulator.
        acc_r = tl.dot(xt, a_r, acc_r, input_precision="ieee", out_dtype=acc_r.dtype)
        if PLANES == 2:
            acc_i = tl.dot(xt, a_i, acc_i, input_precision="ieee", out_dtype=acc_i.dtype)
    omask = (offs_b[:, None] < B) & (offs_m[None, :] < M)
    o_off = offs_b[:, None].to(tl.int64) * M + offs_m[None, :]
    tl.store(z_ptr + o_off, acc_r, mask=omask)
    if PLANES == 2:
        tl.store(zi_ptr + o_off, acc_i, mask=omask)
        if MAG:
            tl.store(y_ptr + o_off, tl.sqrt(acc_r * acc_r + acc_i * acc_i), mask=omask)


@triton.jit
def _bwd(
    w_ptr,
    wi_ptr,
    g_ptr,
    ar_ptr,
    ai_ptr,
    out_ptr,
    B,
    M,
    N,
    seed,
    scale: tl.float64,
    SEEDED: tl.constexpr,
    PLANES: tl.constexpr,
    PHASE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """out = Σ_p w_p A_p; with PHASE, w = g ⊙ z/|z| is formed on load (w_ptr holds z)."""
    # Columns of A along grid axis 0, batch tiles along axis 1; 64-bit offsets.
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    dt = w_ptr.dtype.element_ty
    sc = tl.full((1, 1), scale, dt)
    acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=dt)
    for k0 in range(0, M, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        wmask = (offs_b[:, None] < B) & (offs_k[None, :] < M)
        w_off = offs_b[:, None].to(tl.int64) * M + offs_k[None, :]
        w0 = tl.load(w_ptr + w_off, mask=wmask, other=0.0)
        if PLANES == 2:
            w1 = tl.load(wi_ptr + w_off, mask=wmask, other=0.0)
        if PHASE:
            g = tl.load(g_ptr + w_off, mask=wmask, other=0.0)
            r = tl.sqrt(w0 * w0 + w1 * w1)
            # d|z|/dz is defined as 0 at z = 0, as in the torch reference.
            k = tl.where(r > 0, g / tl.where(r > 0, r, 1.0), 0.0)
            w0 = k * w0
            w1 = k * w1
        if SEEDED:
            gr, gi = _gauss(seed, offs_k[:, None], offs_n[None, :])
            a_r = gr.to(dt) * sc
            a_i = gi.to(dt) * sc
        else:
            amask = (offs_k[:, None] < M) & (offs_n[None, :] < N)
            a_off = offs_k[:, None].to(tl.int64) * N + offs_n[None, :]
            a_r = tl.load(ar_ptr + a_off, mask=amask, other=0.0)
            if PLANES == 2:
                a_i = tl.load(ai_ptr + a_off, mask=amask, other=0.0)
        acc = tl.dot(w0, a_r, acc, input_precision="ieee", out_dtype=acc.dtype)
        if PLANES == 2:
            acc = tl.dot(w1, a_i, acc, input_precision="ieee", out_dtype=acc.dtype)
    omask = (offs_b[:, None] < B) & (offs_n[None, :] < N)
    tl.store(out_ptr + offs_b[:, None].to(tl.int64) * N + offs_n[None, :], acc, mask=omask)


@triton.jit
def _materialize(
    a_ptr,
    ai_ptr,
    M,
    N,
    seed,
    scale: tl.float64,
    PLANES: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    # Columns along grid axis 0, rows along axis 1; 64-bit offsets.
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    dt = a_ptr.dtype.element_ty
    sc = tl.full((1, 1), scale, dt)
    gr, gi = _gauss(seed, offs_m[:, None], offs_n[None, :])
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    off = offs_m[:, None].to(tl.int64) * N + offs_n[None, :]
    tl.store(a_ptr + off, gr.to(dt) * sc, mask=mask)
    if PLANES == 2:
        tl.store(ai_ptr + off, gi.to(dt) * sc, mask=mask)


# ----------------------------------------------------------------------------- host


def _float(t: Tensor, name: str) -> None:
    if t.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be float32/float64 for the triton backend, got {t.dtype}")


def _dense(x: Tensor, ar: Tensor, ai: Tensor | None) -> None:
    if ar.dim() != 2 or ar.shape[1] != x.shape[1]:
        raise ValueError(
            f"A must be (m, n) with n = {x.shape[1]} (x's columns), got {tuple(ar.shape)}"
        )
    if ai is not None and ai.shape != ar.shape:
        raise ValueError(f"a_imag must have a_real's shape {tuple(ar.shape)}, got {ai.shape}")
    for t, name in ((ar, "a_real"), (ai, "a_imag")):
        if t is not None and (t.dtype != x.dtype or t.device != x.device):
            raise ValueError(
                f"{name} is {t.dtype} on {t.device}, x is {x.dtype} on {x.device}; they must match"
            )


def _blocks(batch: int, rows: int, cols: int, cuda: bool) -> tuple[int, int, int]:
    # tl.dot needs every tile side >= 16.
    bb = max(16, min(triton.next_power_of_2(batch), 64 if not cuda else 16))
    if cuda:
        return bb, 64, 64
    # The interpreter pays per program and per loop trip, so CPU tiles are large.
    return bb, max(16, min(triton.next_power_of_2(rows), 256)), 128


def _planes(ar: Tensor | None, ai: Tensor | None, cplx: bool) -> int:
    if ar is None:
        return 2 if cplx else 1
    return 2 if ai is not None else 1


def linear(
    x: Tensor,
    ar: Tensor | None,
    ai: Tensor | None,
    seed: int,
    m: int,
    cplx: bool,
    scale: float,
    magnitude: bool = False,
) -> tuple[Tensor | None, Tensor]:
    """``z = A x`` ``(P, B, m)``, and ``|z|`` ``(B, m)`` when magnitude (complex only)."""
    if x.dim() != 2:
        raise ValueError(f"measurement expects x of shape (B, n), got {tuple(x.shape)}")
    _float(x, "x")
    x = x.contiguous()
    seeded = ar is None
    if not seeded:
        _dense(x, ar, ai)
        ar = ar.contiguous()
        ai = ai.contiguous() if ai is not None else None
        m = ar.shape[0]
    elif seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    planes = _planes(ar, ai, cplx)
    if magnitude and planes != 2:
        raise ValueError("|Ax| needs a complex A (both planes)")
    b, n = x.shape
    z = torch.empty((planes, b, m), device=x.device, dtype=x.dtype)
    y = torch.empty((b, m), device=x.device, dtype=x.dtype) if magnitude else None
    bb, bm, bk = _blocks(b, m, n, x.is_cuda)
    dummy = x  # never read: SEEDED / PLANES are constexpr and skip those loads
    launch = grid(triton.cdiv(m, bm), triton.cdiv(b, bb), what="complex measurement")
    with device_of(x):
        _fwd[launch](
            x,
            dummy if seeded else ar,
            dummy if ai is None else ai,
            z[0],
            z[planes - 1],
            z if y is None else y,
            b,
            m,
            n,
            seed if seeded else 0,
            float(scale),
            SEEDED=seeded,
            PLANES=planes,
            MAG=magnitude,
            BLOCK_B=bb,
            BLOCK_M=bm,
            BLOCK_K=bk,
        )
    return y, z


def _adjoint(
    w: Tensor,
    g: Tensor | None,
    ar: Tensor | None,
    ai: Tensor | None,
    seed: int,
    n: int,
    scale: float,
) -> Tensor:
    if w.dim() != 3 or w.shape[0] not in (1, 2):
        raise ValueError(f"adjoint expects w of shape (P, B, m), P in (1, 2), got {w.shape}")
    _float(w, "w")
    w = w.contiguous()
    planes, b, m = w.shape
    seeded = ar is None
    if not seeded:
        if ar.shape[0] != m or (ai is not None) != (planes == 2):
            raise ValueError(
                f"w {tuple(w.shape)} does not fit A {tuple(ar.shape)} "
                f"({'complex' if ai is not None else 'real'})"
            )
        ar = ar.contiguous()
        ai = ai.contiguous() if ai is not None else None
        n = ar.shape[1]
    out = torch.empty((b, n), device=w.device, dtype=w.dtype)
    bb, bn, bk = _blocks(b, n, m, w.is_cuda)
    if g is not None:
        g = g.to(w.dtype).contiguous()
    launch = grid(triton.cdiv(n, bn), triton.cdiv(b, bb), what="measurement adjoint")
    with device_of(w):
        _bwd[launch](
            w[0],
            w[planes - 1],
            w if g is None else g,
            w if seeded else ar,
            w if ai is None else ai,
            out,
            b,
            m,
            n,
            seed if seeded else 0,
            float(scale),
            SEEDED=seeded,
            PLANES=planes,
            PHASE=g is not None,
            BLOCK_B=bb,
            BLOCK_N=bn,
            BLOCK_K=bk,
        )
    return out


def adjoint(
    w: Tensor, ar: Tensor | None, ai: Tensor | None, seed: int, n: int, scale: float
) -> Tensor:
    """``Σ_p w_p A_p``: ``(P, B, m)`` -> ``(B, n)``."""
    return _adjoint(w, None, ar, ai, seed, n, scale)


def adjoint_phase(
    g: Tensor, z: Tensor, ar: Tensor | None, ai: Tensor | None, seed: int, n: int, scale: float
) -> Tensor:
    """Fused ``Re Aᴴ(g ⊙ z/|z|)``: g ``(B, m)``, z ``(2, B, m)`` -> ``(B, n)``."""
    if z.shape[0] != 2 or g.shape != z.shape[1:]:
        raise ValueError(f"adjoint_phase: g {tuple(g.shape)} must be z's {tuple(z.shape[1:])}")
    return _adjoint(z, g, ar, ai, seed, n, scale)


def materialize(
    seed: int, m: int, n: int, cplx: bool, scale: float, dtype: torch.dtype, device
) -> Tensor:
    """The seeded matrix as planes ``(P, m, n)``, from the same ``_gauss`` as the kernels."""
    if seed < 0 or m < 1 or n < 1:
        raise ValueError(f"materialize needs seed >= 0, m, n >= 1; got {seed}, {m}, {n}")
    planes = 2 if cplx else 1
    a = torch.empty((planes, m, n), dtype=dtype, device=device)
    bm, bn = (32, 64) if a.is_cuda else (min(triton.next_power_of_2(m), 128), 128)
    with device_of(a):
        _materialize[grid(triton.cdiv(n, bn), triton.cdiv(m, bm), what="materialize")](
            a[0], a[planes - 1], m, n, seed, float(scale), PLANES=planes, BLOCK_M=bm, BLOCK_N=bn
        )
    return a
