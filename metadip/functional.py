"""The per-step ops on the fastest available backend (``metadip.dispatch``), and their
pure-torch references (``metadip.reference``), the ground truth every fused kernel is
tested against. All are twice differentiable.
"""

from __future__ import annotations

from torch import Tensor

from metadip import dispatch as _dispatch

__all__ = ["complex_measure", "fourier_features", "tv"]


def tv(x: Tensor, eps: float = 1e-6) -> Tensor:
    """``reference.tv_ref`` on the fastest available backend, ``(B, C, H, W)`` -> ``(B,)``."""
    return _dispatch.tv(x, eps)


def complex_measure(x: Tensor, a_real: Tensor, a_imag: Tensor) -> Tensor:
    """``reference.complex_measure_ref`` on the fastest backend, ``(B, n)`` -> ``(B, m)``."""
    return _dispatch.complex_measure(x, a_real, a_imag)


def fourier_features(b: Tensor, height: int, width: int) -> Tensor:
    """``reference.fourier_features_ref`` on the fastest backend, ``(k, 2)`` -> ``(2k, H, W)``."""
    return _dispatch.fourier_features(b, height, width)
