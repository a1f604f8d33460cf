"""The Triton backend's differentiable ops: the raw kernels of ``tv.py``, ``cmeasure.py``
and ``fourier.py`` wrapped in ``torch.autograd.Function``s whose formulas are
``metadip.autodiff``'s, the same ones the C++ backend registers on its custom ops."""

from __future__ import annotations

from torch import Tensor

from metadip.autodiff import differentiable

from . import cmeasure, fourier, tv

__all__ = [
    "TABLE",
    "complex_measure",
    "fourier_features",
    "seeded_adjoint",
    "seeded_measure",
    "tv_value",
]


def _tv_fwd(x: Tensor, eps: float, with_grad: bool) -> tuple[Tensor, Tensor]:
    return tv.tv_forward(x, eps)  # one sweep gives the gradient anyway


def _cm_lin(x, ar, ai, seed: int, m: int, cplx: bool, scale: float) -> Tensor:
    return cmeasure.linear(x, ar, ai, seed, m, cplx, scale)[1]


def _cm_meas(x, ar, ai, seed: int, m: int, scale: float) -> tuple[Tensor, Tensor]:
    return cmeasure.linear(x, ar, ai, seed, m, True, scale, magnitude=True)


TABLE = differentiable(
    {
        "tv_fwd": _tv_fwd,
        "tv_hvp": tv.tv_hvp,
        "cm_lin": _cm_lin,
        "cm_adj": cmeasure.adjoint,
        "cm_meas": _cm_meas,
        "ff_fwd": fourier.fourier_forward,
        "ff_bwd": fourier.fourier_backward,
    },
    cm_adj_phase=cmeasure.adjoint_phase,
)


def tv_value(x: Tensor, eps: float = 1e-6) -> Tensor:
    """Smoothed isotropic TV per image, ``(B, C, H, W)`` -> ``(B,)``; twice differentiable."""
    return TABLE.tv_fwd(x, eps, True)[0]


def complex_measure(x: Tensor, a_real: Tensor, a_imag: Tensor) -> Tensor:
    """``|A x|``: x ``(B, n)``, planes ``(m, n)`` -> ``(B, m)``; twice differentiable."""
    return TABLE.cm_meas(x, a_real, a_imag, 0, a_real.shape[0], 1.0)[0]


def seeded_measure(x: Tensor, seed: int, m: int, cplx: bool, scale: float) -> Tensor:
    """``|A x|`` (complex) or ``A x`` (real) with A generated in-kernel from the seed."""
    if cplx:
        return TABLE.cm_meas(x, None, None, seed, m, scale)[0]
    return TABLE.cm_lin(x, None, None, seed, m, False, scale)[0]


def seeded_adjoint(y: Tensor, seed: int, n: int, scale: float) -> Tensor:
    """``Aᵀ y`` for the real seeded A: ``(B, m)`` -> ``(B, n)``; twice differentiable."""
    if y.dim() != 2:
        raise ValueError(f"seeded_adjoint expects y of shape (B, m), got {tuple(y.shape)}")
    return TABLE.cm_adj(y[None], None, None, seed, n, scale)


def fourier_features(b: Tensor, height: int, width: int) -> Tensor:
    """``[sin 2πb·p; cos 2πb·p]`` ``(2k, H, W)``; twice differentiable in b."""
    return TABLE.ff_fwd(b, height, width)
