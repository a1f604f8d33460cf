"""Reference implementations of the per-step ops, in pure torch.

These are the ground truth every fused kernel is tested against. All three are
twice differentiable (meta-training differentiates the inner step's gradient).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from metadip import dispatch as _dispatch

__all__ = [
    "complex_measure",
    "complex_measure_ref",
    "fourier_features",
    "fourier_features_ref",
    "tv",
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
    dh = torch.nn.functional.pad(x[:, :, 1:, :] - x[:, :, :-1, :], (0, 0, 0, 1))
    dw = torch.nn.functional.pad(x[:, :, :, 1:] - x[:, :, :, :-1], (0, 1, 0, 0))
    return torch.sqrt(dh * dh + dw * dw + eps).sum(dim=(1, 2, 3))


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


def complex_measure_ref(x: Tensor, a_real: Tensor, a_imag: Tensor) -> Tensor:
    """Magnitude of a complex Gaussian measurement, ``|A x|``.

    x: ``(B, n)`` real; A = a_real + i·a_imag with both planes ``(m, n)`` -> ``(B, m)``.
    The gradient at ``|Ax| = 0`` is defined as 0.
    """
    check_measure_args(x, a_real, a_imag)
    re = x @ a_real.t()
    im = x @ a_imag.t()
    return _safe_sqrt(re * re + im * im)


def fourier_features_ref(b: Tensor, height: int, width: int) -> Tensor:
    """Fourier features of the pixel grid.

    b: ``(k, 2)`` frequencies (row, column) -> ``(2k, height, width)``:
    ``[sin(2π b·p); cos(2π b·p)]`` with ``p = (i / height, j / width)`` in [0, 1).
    """
    if b.dim() != 2 or b.shape[1] != 2:
        raise ValueError(f"fourier_features expects b of shape (k, 2), got {tuple(b.shape)}")
    if height < 1 or width < 1:
        raise ValueError(f"fourier_features needs height, width >= 1, got {height}x{width}")
    ph = torch.arange(height, device=b.device, dtype=b.dtype) / height
    pw = torch.arange(width, device=b.device, dtype=b.dtype) / width
    phase = 2 * math.pi * (b[:, 0, None, None] * ph[:, None] + b[:, 1, None, None] * pw[None, :])
    return torch.cat([torch.sin(phase), torch.cos(phase)], dim=0)


# The public names; the kernels layer routes these through metadip.dispatch.
def tv(x: Tensor, eps: float = 1e-6) -> Tensor:
    """:func:`tv_ref` on the fastest available backend, ``(B, C, H, W)`` -> ``(B,)``."""
    return _dispatch.tv(x, eps)


def complex_measure(x: Tensor, a_real: Tensor, a_imag: Tensor) -> Tensor:
    """:func:`complex_measure_ref` on the fastest available backend, ``(B, n)`` -> ``(B, m)``."""
    return _dispatch.complex_measure(x, a_real, a_imag)


def fourier_features(b: Tensor, height: int, width: int) -> Tensor:
    """:func:`fourier_features_ref` on the fastest backend, ``(k, 2)`` -> ``(2k, H, W)``."""
    return _dispatch.fourier_features(b, height, width)
