"""Each backend's table of the fused ops, with one signature per op (``metadip.dispatch``
chooses between them):

* ``TorchOps``: the references of ``metadip.reference``, on any device;
* ``CppOps``: ``metadip._C`` (C++ on ATen's thread pool, and CUDA where built) through
  the ``torch.library`` operators of ``metadip._ops``;
* ``TritonOps``: ``kernels/*.py`` (installed as ``metadip.kernels``).

Every op is twice differentiable (``metadip.autodiff``'s formulas on those operators).
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch
from torch import Tensor

from metadip.reference import (
    check_fourier_args,
    check_measure_args,
    complex_measure_ref,
    dense_measure_ref,
    dense_normal_ref,
    fourier_features_ref,
    seeded_gaussian_ref,
    tv_ref,
)

__all__ = ["IMPL", "CppOps", "TorchOps", "TritonOps"]


class TorchOps:
    """The references of ``metadip.reference``."""

    @staticmethod
    def tv(x: Tensor, eps: float) -> Tensor:
        return tv_ref(x, eps)

    @staticmethod
    def complex_measure(x: Tensor, a_real: Tensor, a_imag: Tensor) -> Tensor:
        return complex_measure_ref(x, a_real, a_imag)

    @staticmethod
    def fourier_features(b: Tensor, height: int, width: int) -> Tensor:
        return fourier_features_ref(b, height, width)

    @staticmethod
    def dense_measure(x: Tensor, a: Tensor) -> Tensor:
        return dense_measure_ref(x, a)

    @staticmethod
    def dense_adjoint(y: Tensor, a: Tensor) -> Tensor:
        return y @ a

    dense_normal = staticmethod(dense_normal_ref)

    @staticmethod
    def seeded_measure(x: Tensor, seed: int, m: int, cplx: bool, scale: float) -> Tensor:
        a = seeded_gaussian_ref(seed, m, x.shape[1], cplx, scale, x.dtype, x.device)
        if cplx:
            return TorchOps.complex_measure(x, a[0], a[1])
        return x @ a[0].t()

    @staticmethod
    def seeded_adjoint(y: Tensor, seed: int, n: int, scale: float) -> Tensor:
        return y @ seeded_gaussian_ref(seed, y.shape[1], n, False, scale, y.dtype, y.device)[0]

    @staticmethod
    def materialize(seed, m, n, cplx, scale, dtype, device) -> Tensor:
        return seeded_gaussian_ref(seed, m, n, cplx, scale, dtype, device)


class CppOps:
    """metadip._C through the torch.library operators of metadip._ops."""

    @staticmethod
    def _ops() -> ModuleType:
        from metadip import _ops

        return _ops

    @staticmethod
    def tv(x: Tensor, eps: float) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"tv expects x of shape (B, C, H, W), got shape {tuple(x.shape)}")
        if eps <= 0:
            raise ValueError(f"tv needs eps > 0 to be differentiable everywhere, got {eps}")
        with_grad = x.requires_grad and torch.is_grad_enabled()
        return CppOps._ops().tv_fwd(x, eps, with_grad)[0]

    @staticmethod
    def complex_measure(x: Tensor, a_real: Tensor, a_imag: Tensor) -> Tensor:
        check_measure_args(x, a_real, a_imag)
        return CppOps._ops().cm_meas(x, a_real, a_imag, 0, a_real.shape[0], 1.0)[0]

    @staticmethod
    def fourier_features(b: Tensor, height: int, width: int) -> Tensor:
        check_fourier_args(b, height, width, "cpp")
        return CppOps._ops().ff_fwd(b, height, width)

    @staticmethod
    def dense_measure(x: Tensor, a: Tensor) -> Tensor:
        return CppOps._ops().cm_lin(x, a, None, 0, a.shape[0], False, 1.0)[0]

    @staticmethod
    def dense_adjoint(y: Tensor, a: Tensor) -> Tensor:
        return CppOps._ops().cm_adj(y[None], a, None, 0, a.shape[1], 1.0)

    @staticmethod
    def dense_normal(
        x: Tensor, a: Tensor, y: Tensor, a_imag: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        # One read of A on the CPU; on a GPU the cuBLAS products are the fast path.
        if x.device.type != "cpu":
            return dense_normal_ref(x, a, y, a_imag)
        return CppOps._ops().cm_normal(x, a, a_imag, y)

    @staticmethod
    def seeded_measure(x: Tensor, seed: int, m: int, cplx: bool, scale: float) -> Tensor:
        ops = CppOps._ops()
        if cplx:
            return ops.cm_meas(x, None, None, seed, m, scale)[0]
        return ops.cm_lin(x, None, None, seed, m, False, scale)[0]

    @staticmethod
    def seeded_adjoint(y: Tensor, seed: int, n: int, scale: float) -> Tensor:
        return CppOps._ops().cm_adj(y[None], None, None, seed, n, scale)

    @staticmethod
    def materialize(seed, m, n, cplx, scale, dtype, device) -> Tensor:
        like = torch.empty(0, dtype=dtype, device=device)
        return CppOps._ops().cm_materialize(seed, m, n, cplx, scale, like)


class TritonOps:
    """kernels/*.py (installed as metadip.kernels): the differentiable ops of
    ``kernels/autograd.py`` over the raw kernels, and ``materialize``."""

    @staticmethod
    def _mod(name: str) -> ModuleType:
        try:
            return importlib.import_module(f"metadip.kernels.{name}")
        except ModuleNotFoundError:  # running from a source tree without installing
            return importlib.import_module(f"kernels.{name}")

    @staticmethod
    def tv(x: Tensor, eps: float) -> Tensor:
        return TritonOps._mod("autograd").tv_value(x, eps)

    @staticmethod
    def complex_measure(x: Tensor, a_real: Tensor, a_imag: Tensor) -> Tensor:
        check_measure_args(x, a_real, a_imag)
        return TritonOps._mod("autograd").complex_measure(x, a_real, a_imag)

    @staticmethod
    def fourier_features(b: Tensor, height: int, width: int) -> Tensor:
        return TritonOps._mod("autograd").fourier_features(b, height, width)

    # A dense product on a GPU is cuBLAS's job.
    dense_measure = staticmethod(dense_measure_ref)
    dense_adjoint = TorchOps.dense_adjoint
    dense_normal = staticmethod(dense_normal_ref)

    @staticmethod
    def seeded_measure(x: Tensor, seed: int, m: int, cplx: bool, scale: float) -> Tensor:
        return TritonOps._mod("autograd").seeded_measure(x, seed, m, cplx, scale)

    @staticmethod
    def seeded_adjoint(y: Tensor, seed: int, n: int, scale: float) -> Tensor:
        return TritonOps._mod("autograd").seeded_adjoint(y, seed, n, scale)

    @staticmethod
    def materialize(seed, m, n, cplx, scale, dtype, device) -> Tensor:
        return TritonOps._mod("cmeasure").materialize(seed, m, n, cplx, scale, dtype, device)


IMPL: dict[str, type] = {"torch": TorchOps, "cpp": CppOps, "triton": TritonOps}
