"""The references: every fused op in pure torch (and NumPy for the seeded matrices),
with the argument checks and the pure-torch pieces of the autograd formulas.

A leaf module (torch and NumPy only): the functional API, the dispatch layer, the C++
registration layer, the Triton wrappers, the tests and the benchmarks all import it,
and it imports none of them. The ops are twice differentiable (meta-training
differentiates the inner step's gradient).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "forward_differences",
    "check_dense_args",
    "check_measure_args",
    "check_normal_args",
    "complex_measure_ref",
    "dense_measure_ref",
    "dense_normal_ref",
    "fourier_double_backward",
    "fourier_features_ref",
    "phase_weights",
    "philox_ref",
    "seeded_gaussian_ref",
    "tv_ref",
]


def _safe_sqrt(s: Tensor) -> Tensor:
    """sqrt(s) with gradient 0 (not inf/NaN) where s == 0, at every order."""
    pos = s > 0
    return torch.where(
        pos, torch.sqrt(torch.where(pos, s, torch.ones_like(s))), torch.zeros_like(s)
    )


def tv_ref(x: Tensor, eps: float = 1e-6) -> Tensor:
    """Smoothed isotropic total variation per image.

    x: ``(B, C, H, W)`` -> ``(B,)``;
    ``tv(x)_b = sum_{c,i,j} sqrt(dh_{cij}^2 + dw_{cij}^2 + eps)`` with forward
    differences and zero difference past the last row/column (Neumann boundary).
    """
    if x.dim() != 4:
        raise ValueError(f"tv expects x of shape (B, C, H, W), got shape {tuple(x.shape)}")
    if eps <= 0:
        raise ValueError(f"tv needs eps > 0 to be differentiable everywhere, got {eps}")
    dh, dw = forward_differences(x)
    return torch.sqrt(dh * dh + dw * dw + eps).sum(dim=(1, 2, 3))


def forward_differences(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(∂_h x, ∂_w x)`` of ``(..., H, W)``, each ``(..., H, W)``: forward differences, zero
    past the last row / column (Neumann), as TV takes them."""
    dh = torch.nn.functional.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    dw = torch.nn.functional.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1, 0, 0))
    return dh, dw


def check_measure_args(x: Tensor, a_real: Tensor, a_imag: Tensor) -> None:
    """Raises ValueError unless x is ``(B, n)`` and both planes are ``(m, n)``."""
    if x.dim() != 2:
        raise ValueError(f"complex_measure expects x of shape (B, n), got {tuple(x.shape)}")
    if a_real.shape != a_imag.shape or a_real.dim() != 2:
        raise ValueError(
            "complex_measure expects a_real and a_imag of one shape (m, n), got "
            f"{tuple(a_real.shape)} and {tuple(a_imag.shape)}"
        )
    if a_real.shape[1] != x.shape[1]:
        raise ValueError(
            f"complex_measure: x has n={x.shape[1]} but A has n={a_real.shape[1]} columns"
        )


def check_dense_args(v: Tensor, a: Tensor, adjoint: bool = False) -> None:
    """Raises unless A is ``(m, n)`` of v's dtype and v is ``(B, n)`` (``dense_measure``) or,
    with ``adjoint``, ``(B, m)`` (``dense_adjoint``)."""
    name, arg, dim, axis = (
        ("dense_adjoint", "y", "m", 0) if adjoint else ("dense_measure", "x", "n", 1)
    )
    if v.dim() != 2 or a.dim() != 2 or a.shape[axis] != v.shape[1]:
        raise ValueError(
            f"{name} expects {arg} (B, {dim}) and A (m, n) with the same {dim}, got {arg} "
            f"{tuple(v.shape)} and A {tuple(a.shape)}"
        )
    if v.dtype != a.dtype:
        raise TypeError(f"{name}: {arg} has dtype {v.dtype} but A has {a.dtype}")


def dense_measure_ref(x: Tensor, a: Tensor) -> Tensor:
    """A real linear measurement with a stored A: x ``(B, n)``, A ``(m, n)`` -> ``(B, m)``."""
    check_dense_args(x, a)
    return x @ a.t()


def check_normal_args(x: Tensor, a: Tensor, y: Tensor, a_imag: Tensor | None = None) -> None:
    """Raises unless x ``(B, n)``, A ``(m, n)`` (and ``a_imag`` like A) and y ``(B, m)``
    share a dtype."""
    check_dense_args(x, a)
    if a_imag is not None and (a_imag.shape != a.shape or a_imag.dtype != a.dtype):
        raise ValueError(
            f"dense_normal expects a_imag like A {tuple(a.shape)} {a.dtype}, got "
            f"{tuple(a_imag.shape)} {a_imag.dtype}"
        )
    if y.shape != (x.shape[0], a.shape[0]):
        raise ValueError(
            f"dense_normal expects y (B, m) = {(x.shape[0], a.shape[0])} for x "
            f"{tuple(x.shape)} and A {tuple(a.shape)}, got y {tuple(y.shape)}"
        )
    if y.dtype != x.dtype:
        raise TypeError(f"dense_normal: y has dtype {y.dtype} but x has {x.dtype}")


def dense_normal_ref(
    x: Tensor, a: Tensor, y: Tensor, a_imag: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """A stored A's least-squares fit and its gradient, x ``(B, n)``, A ``(m, n)``, y
    ``(B, m)`` -> value ``(B, m)``, gradient ``(B, n)``. Real A: ``(z, Aᵀ(z − y))`` with
    ``z = A x``, the gradient of ``½‖A x − y‖²``. Complex ``A = a + i a_imag``:
    ``(|z|, Re Aᴴ((|z| − y) z/|z|))``, the gradient of ``½‖|A x| − y‖²`` (0 where
    ``|z| = 0``)."""
    check_normal_args(x, a, y, a_imag)
    z = x @ a.t()
    if a_imag is None:
        return z, (z - y) @ a
    zi = x @ a_imag.t()
    amp = _safe_sqrt(z * z + zi * zi)
    c = torch.where(amp > 0, (amp - y) / torch.where(amp > 0, amp, torch.ones_like(amp)), 0)
    return amp, (c * z) @ a + (c * zi) @ a_imag


def complex_measure_ref(x: Tensor, a_real: Tensor, a_imag: Tensor) -> Tensor:
    """Magnitude of a complex Gaussian measurement, ``|A x|``.

    x: ``(B, n)`` real; A = a_real + i·a_imag with both planes ``(m, n)`` -> ``(B, m)``.
    The gradient at ``|Ax| = 0`` is defined as 0.
    """
    check_measure_args(x, a_real, a_imag)
    re = x @ a_real.t()
    im = x @ a_imag.t()
    return _safe_sqrt(re * re + im * im)


def check_fourier_args(b: Tensor, height: int, width: int, backend: str | None = None) -> None:
    """Raises on a ``b`` not ``(k, 2)`` or a grid under 1x1; with ``backend`` (a compiled
    one), also on a dtype other than float32/float64. Checked here, in Python, because an
    exception thrown inside a C++ op can crash an extension built by another compiler."""
    if b.dim() != 2 or b.shape[1] != 2:
        raise ValueError(f"fourier_features expects b of shape (k, 2), got {tuple(b.shape)}")
    if height < 1 or width < 1:
        raise ValueError(f"fourier_features needs height, width >= 1, got {height}x{width}")
    if backend is not None and b.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"fourier_features ({backend}) supports float32/float64, got {b.dtype}")


def fourier_features_ref(b: Tensor, height: int, width: int) -> Tensor:
    """Fourier features of the pixel grid.

    b: ``(k, 2)`` frequencies (row, column) -> ``(2k, height, width)``:
    ``[sin(2π b·p); cos(2π b·p)]`` with ``p = (i / height, j / width)`` in [0, 1).
    """
    check_fourier_args(b, height, width)
    ph = torch.arange(height, device=b.device, dtype=b.dtype) / height
    pw = torch.arange(width, device=b.device, dtype=b.dtype) / width
    phase = 2 * math.pi * (b[:, 0, None, None] * ph[:, None] + b[:, 1, None, None] * pw[None, :])
    return torch.cat([torch.sin(phase), torch.cos(phase)], dim=0)


def phase_weights(g_y: Tensor | None, y: Tensor, z: Tensor, g_z: Tensor | None) -> Tensor:
    """Cotangent of z = (Re Ax, Im Ax) ``(2, B, m)`` given those of ``|z|`` and of z.

    ``w = g_z + g_y · z / |z|`` with 0 where ``|z| = 0``; pure torch, so it is
    differentiable again (it carries the second-order term of |z|).
    """
    pos = y > 0
    inv = torch.where(pos, 1.0 / torch.where(pos, y, torch.ones_like(y)), torch.zeros_like(y))
    w = torch.zeros_like(z) if g_y is None else (g_y * inv).unsqueeze(0) * z
    return w if g_z is None else w + g_z


def _grid(height: int, width: int, like: Tensor) -> tuple[Tensor, Tensor]:
    ph = torch.arange(height, device=like.device, dtype=like.dtype) / height
    pw = torch.arange(width, device=like.device, dtype=like.dtype) / width
    return ph[:, None], pw[None, :]


def fourier_double_backward(
    gg: Tensor, g: Tensor, b: Tensor, height: int, width: int
) -> tuple[Tensor, Tensor]:
    """Backward of ``grad_b = Σ 2π p (g_sin cos φ - g_cos sin φ)`` given its cotangent gg ``(k,2)``.

    With ``φ = 2π b·p`` and ``ψ = 2π gg·p``: cotangent of g is ``[ψ cos φ; -ψ sin φ]``
    (the JVP of the features along gg), cotangent of b is
    ``Σ 2π p ψ (-g_sin sin φ - g_cos cos φ)``. Pure torch (differentiable again).
    """
    k = b.shape[0]
    ph, pw = _grid(height, width, b)
    phi = 2 * math.pi * (b[:, 0, None, None] * ph + b[:, 1, None, None] * pw)
    psi = 2 * math.pi * (gg[:, 0, None, None] * ph + gg[:, 1, None, None] * pw)
    s, c = torch.sin(phi), torch.cos(phi)
    cot_g = torch.cat([psi * c, -psi * s], dim=0)
    t = 2 * math.pi * psi * (-g[:k] * s - g[k:] * c)
    cot_b = torch.stack([(t * ph).sum(dim=(1, 2)), (t * pw).sum(dim=(1, 2))], dim=1)
    return cot_g, cot_b


def _philox4x32_10(
    c: tuple[np.ndarray, ...], k0: int, k1: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Philox4x32-10 on uint64 arrays holding 32-bit words (Salmon et al., Random123)."""
    mask = np.uint64(0xFFFFFFFF)
    c0, c1, c2, c3 = (np.asarray(w, dtype=np.uint64) for w in c)
    key0, key1 = np.uint64(k0), np.uint64(k1)
    # 32x32 -> 64-bit products fit uint64 exactly, so hi/lo words are shifts and masks.
    for _ in range(10):
        p0 = np.uint64(0xD2511F53) * c0
        p1 = np.uint64(0xCD9E8D57) * c2
        c0, c1, c2, c3 = (
            (p1 >> np.uint64(32)) ^ c1 ^ key0,
            p1 & mask,
            (p0 >> np.uint64(32)) ^ c3 ^ key1,
            p0 & mask,
        )
        key0 = (key0 + np.uint64(0x9E3779B9)) & mask
        key1 = (key1 + np.uint64(0xBB67AE85)) & mask
    return c0, c1, c2, c3


def philox_ref(seed: int, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First two words of Philox4x32-10 at counter (cols, rows, 0, 0), key = seed (lo, hi)."""
    c0, c1 = np.broadcast_arrays(cols.astype(np.uint64), rows.astype(np.uint64))
    zero = np.zeros_like(c0)
    w = _philox4x32_10((c0, c1, zero, zero), seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF)
    return w[0], w[1]


def seeded_gaussian_ref(
    seed: int,
    m: int,
    n: int,
    cplx: bool,
    scale: float,
    dtype: torch.dtype,
    device: torch.device | str,
) -> Tensor:
    """Reference seeded matrix as planes ``(P, m, n)`` (numpy integers, torch float32 maths)."""
    planes = 2 if cplx else 1
    out = torch.empty((planes, m, n), dtype=dtype)
    step = max(1, (1 << 22) // n)  # bounded temporary memory
    cols = np.arange(n, dtype=np.uint64)[None, :]
    for r0 in range(0, m, step):
        rows = np.arange(r0, min(m, r0 + step), dtype=np.uint64)[:, None]
        w0, w1 = philox_ref(seed, rows, cols)
        u0 = (torch.from_numpy((w0 >> np.uint64(9)).astype(np.float32)) + 0.5) * 2.0**-23
        u1 = (torch.from_numpy((w1 >> np.uint64(9)).astype(np.float32)) + 0.5) * 2.0**-23
        rad = torch.sqrt(-2.0 * torch.log(u0))
        th = np.float32(2 * math.pi) * u1
        out[0, r0 : r0 + rows.shape[0]] = (rad * torch.cos(th)).to(dtype) * scale
        if cplx:
            out[1, r0 : r0 + rows.shape[0]] = (rad * torch.sin(th)).to(dtype) * scale
    return out.to(device)
