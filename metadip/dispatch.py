"""Backend selection for the fused ops: Triton -> C++/CUDA extension -> torch reference
(each backend's table of ops is in ``metadip.backends``).

Per device the preference is

* CUDA: ``triton`` -> ``cpp`` (``metadip._C`` built with CUDA) -> ``torch``;
* CPU:  ``cpp`` -> ``torch``. Triton runs on the CPU only in its interpreter
  (``TRITON_INTERPRET=1``, for tests) and only when asked for explicitly.

``METADIP_BACKEND=triton|cpp|torch`` (or ``backend=`` on each function) forces a
backend and raises :class:`BackendUnavailable` if it cannot run. A backend counts
as available only after it has run a tiny instance of every op and matched the
reference (cached per backend, device type and interpreter setting).

Seeded measurement matrices: entry (i, j) is ``scale · N_ij`` with ``N_ij`` the
Box–Muller transform of a Philox4x32-10 draw keyed by the seed with counter
(j, i, 0, 0) (csrc/common.h). Each backend's :func:`seeded_gaussian` equals the
matrix its :func:`seeded_measure` uses exactly; across backends they agree to
float32 rounding of log/sin/cos (~1e-6 relative).
"""

from __future__ import annotations

import functools
import math
import os

import torch
from torch import Tensor

from metadip.backends import IMPL, TorchOps
from metadip.reference import check_dense_args, check_normal_args

__all__ = [
    "BACKENDS",
    "BackendUnavailable",
    "available",
    "backend_for",
    "complex_measure",
    "default_scale",
    "dense_adjoint",
    "dense_measure",
    "dense_normal",
    "fourier_features",
    "seeded_adjoint",
    "seeded_gaussian",
    "seeded_measure",
    "tv",
    "unavailable_reason",
]

BACKENDS = ("triton", "cpp", "torch")
ENV = "METADIP_BACKEND"
_ORDER = {"cuda": ("triton", "cpp", "torch"), "cpu": ("cpp", "torch")}
_OPS = ("tv", "complex_measure", "fourier_features", "seeded_measure", "dense_measure")


class BackendUnavailable(RuntimeError):
    """A forced backend cannot run on the requested device."""


def _device_type(device: torch.device | str | None) -> str:
    """``"cpu"``, ``"cuda"`` or any other torch device type (``"mps"``, ``"xpu"`` ...):
    those run the torch reference ops, the kernels being CPU / CUDA code."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device).type


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# ----------------------------------------------------------------------------- probing


def _probe_ops(impl: type, device: str) -> None:
    """Runs every op once at a tiny size and compares with the reference; raises on mismatch."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 3, 4, generator=g, dtype=torch.float64).to(device)
    v = torch.rand(2, 5, generator=g, dtype=torch.float64).to(device)
    ar = torch.randn(3, 5, generator=g, dtype=torch.float64).to(device)
    ai = torch.randn(3, 5, generator=g, dtype=torch.float64).to(device)
    b = torch.randn(2, 2, generator=g, dtype=torch.float64).to(device)
    checks = [
        (impl.tv(x, 1e-6), TorchOps.tv(x, 1e-6)),
        (impl.complex_measure(v, ar, ai), TorchOps.complex_measure(v, ar, ai)),
        (impl.fourier_features(b, 3, 4), TorchOps.fourier_features(b, 3, 4)),
        (impl.seeded_measure(v, 7, 3, True, 0.5), TorchOps.seeded_measure(v, 7, 3, True, 0.5)),
        (impl.dense_measure(v, ar), TorchOps.dense_measure(v, ar)),
    ]
    w = torch.rand(2, 3, generator=g, dtype=torch.float64).to(device)
    if not torch.allclose(impl.dense_adjoint(w, ar), w @ ar, rtol=1e-5, atol=1e-6):
        raise RuntimeError("dense_adjoint disagrees with the torch reference on a probe input")
    for name, (got, want) in zip(_OPS, checks, strict=True):
        if not torch.allclose(got, want, rtol=1e-5, atol=1e-6):
            raise RuntimeError(f"{name} disagrees with the torch reference on a probe input")


@functools.cache
def _probe(backend: str, device: str, interpret: bool) -> str:
    """'' if the backend runs every op on the device, else why not (cached)."""
    del interpret  # part of the cache key only: triton decides CPU support from it
    if backend == "torch":
        return ""
    if device not in _ORDER:
        return f"the {backend} kernels run on cpu and cuda only, not on {device}"
    if device == "cuda" and not torch.cuda.is_available():
        return "no CUDA device is available"
    if backend == "cpp":
        from metadip import _ops

        if not _ops.HAS_EXT:
            return (
                f"{_ops.EXT_ERROR}; reinstall with a C++ compiler and without METADIP_NO_EXT=1: "
                'pip install --no-build-isolation -e ".[dev]"'
            )
        if device == "cuda" and not _ops._C.has_cuda:
            return (
                "metadip._C_cuda was not built (torch without CUDA, no nvcc, or its build "
                "failed at install time; the C++ CPU kernels in metadip._C are unaffected)"
            )
    if backend == "triton":
        try:
            import triton  # noqa: F401
        except ImportError as exc:
            return f"triton is not importable ({exc})"
        if device == "cpu" and not _interpret():
            return "triton runs on the CPU only in its interpreter (set TRITON_INTERPRET=1)"
    try:
        _probe_ops(IMPL[backend], device)
    except Exception as exc:  # any failure means "not usable here", with the reason kept
        return f"probe run failed: {type(exc).__name__}: {exc}"
    return ""


def unavailable_reason(backend: str, device: torch.device | str | None = None) -> str:
    """Why ``backend`` cannot run on ``device`` ('' when it can)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    return _probe(backend, _device_type(device), _interpret())


def available(device: torch.device | str | None = None) -> dict[str, bool]:
    """Which backends run on ``device`` (default: CUDA if present, else CPU)."""
    return {name: not unavailable_reason(name, device) for name in BACKENDS}


def backend_for(op: str, device: torch.device | str | None, backend: str | None = None) -> str:
    """The backend ``op`` uses on ``device``: the forced one, else the first usable one."""
    if op not in _OPS:
        raise ValueError(f"unknown op {op!r}; expected one of {_OPS}")
    forced = backend or os.environ.get(ENV) or None
    kind = _device_type(device)
    if forced is not None:
        if forced not in BACKENDS:
            raise ValueError(f"{ENV}/backend must be one of {BACKENDS}, got {forced!r}")
        why = _probe(forced, kind, _interpret())
        if why:
            raise BackendUnavailable(f"backend {forced!r} requested for {op} on {kind}: {why}")
        return forced
    for name in _ORDER.get(kind, ()):
        if not _probe(name, kind, _interpret()):
            return name
    return "torch"


# ----------------------------------------------------------------------------- public ops


def tv(x: Tensor, eps: float = 1e-6, *, backend: str | None = None) -> Tensor:
    """Smoothed isotropic TV per image (see ``reference.tv_ref``): ``(B,C,H,W)`` -> ``(B,)``."""
    return IMPL[backend_for("tv", x.device, backend)].tv(x, eps)


def complex_measure(
    x: Tensor, a_real: Tensor, a_imag: Tensor, *, backend: str | None = None
) -> Tensor:
    """``|A x|`` for A = a_real + i·a_imag: x ``(B, n)``, planes ``(m, n)`` -> ``(B, m)``."""
    return IMPL[backend_for("complex_measure", x.device, backend)].complex_measure(
        x, a_real, a_imag
    )


def dense_measure(x: Tensor, a: Tensor, *, backend: str | None = None) -> Tensor:
    """``A x`` for a stored real A: x ``(B, n)``, A ``(m, n)`` -> ``(B, m)``; twice
    differentiable in x (the C++ backend streams A once for 2-8 float32 vectors)."""
    check_dense_args(x, a)
    return IMPL[backend_for("dense_measure", x.device, backend)].dense_measure(x, a)


def dense_adjoint(y: Tensor, a: Tensor, *, backend: str | None = None) -> Tensor:
    """``Aᵀ y`` for a stored real A ``(m, n)``: y ``(B, m)`` -> ``(B, n)``; the adjoint of
    :func:`dense_measure`, on the same backend."""
    check_dense_args(y, a, adjoint=True)
    return IMPL[backend_for("dense_measure", y.device, backend)].dense_adjoint(y, a)


def dense_normal(
    x: Tensor, a: Tensor, y: Tensor, a_imag: Tensor | None = None, *, backend: str | None = None
) -> tuple[Tensor, Tensor]:
    """A stored A's least-squares fit value and gradient, reading A once (C++ backend, 2-8
    float32 vectors): x ``(B, n)``, A ``(m, n)``, y ``(B, m)``. Real A: ``(A x, Aᵀ(A x −
    y))``; with ``a_imag`` (A = a + i a_imag, amplitudes): ``(|A x|, Re Aᴴ((|z| − y)
    z/|z|))``. Values only, no autograd: ``Operator.residual_sq`` builds the first-order
    rule on it (``reference.dense_normal_ref`` is the definition)."""
    check_normal_args(x, a, y, a_imag)
    return IMPL[backend_for("dense_measure", x.device, backend)].dense_normal(x, a, y, a_imag)


def fourier_features(b: Tensor, height: int, width: int, *, backend: str | None = None) -> Tensor:
    """``[sin 2πb·p; cos 2πb·p]``: b ``(k, 2)`` -> ``(2k, height, width)``."""
    return IMPL[backend_for("fourier_features", b.device, backend)].fourier_features(
        b, height, width
    )


def default_scale(m: int, complex: bool = True) -> float:
    """Entry std per plane so that A is N(0, 1/m) (real) or CN(0, 1/m) (complex)."""
    return 1.0 / math.sqrt(2 * m) if complex else 1.0 / math.sqrt(m)


def _seed_args(seed: int, m: int, n: int) -> None:
    if not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an int in [0, 2**63), got {seed!r}")
    if m < 1 or n < 1 or m >= 2**32 or n >= 2**32:
        raise ValueError(f"seeded matrices need 1 <= m, n < 2**32, got m={m}, n={n}")


def seeded_measure(
    x: Tensor,
    seed: int,
    m: int,
    *,
    complex: bool = True,
    scale: float | None = None,
    backend: str | None = None,
) -> Tensor:
    """Measurement with a seeded Gaussian A ``(m, n)`` that is never stored.

    x ``(B, n)`` -> ``(B, m)``: ``|A x|`` when complex (phase retrieval), ``A x``
    when real (compressive sensing). Equals ``complex_measure(x, *seeded_gaussian(
    seed, m, n))`` (or ``x @ seeded_gaussian(...).T``) with the same backend.
    """
    if x.dim() != 2:
        raise ValueError(f"seeded_measure expects x of shape (B, n), got {tuple(x.shape)}")
    _seed_args(seed, m, x.shape[1])
    scale = default_scale(m, complex) if scale is None else float(scale)
    impl = IMPL[backend_for("seeded_measure", x.device, backend)]
    return impl.seeded_measure(x, seed, m, complex, scale)


def seeded_adjoint(
    y: Tensor, seed: int, n: int, *, scale: float | None = None, backend: str | None = None
) -> Tensor:
    """``Aᵀ y`` for the real seeded A ``(m, n)``: ``(B, m)`` -> ``(B, n)``.

    The adjoint of compressive sensing's ``seeded_measure(x, seed, m, complex=False)``;
    twice differentiable, A never stored.
    """
    if y.dim() != 2:
        raise ValueError(f"seeded_adjoint expects y of shape (B, m), got {tuple(y.shape)}")
    _seed_args(seed, y.shape[1], n)
    scale = default_scale(y.shape[1], False) if scale is None else float(scale)
    impl = IMPL[backend_for("seeded_measure", y.device, backend)]
    return impl.seeded_adjoint(y, seed, n, scale)


def seeded_gaussian(
    seed: int,
    m: int,
    n: int,
    *,
    complex: bool = True,
    scale: float | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    backend: str | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """The matrix :func:`seeded_measure` uses: ``(a_real, a_imag)``, each ``(m, n)``, or A."""
    _seed_args(seed, m, n)
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"seeded_gaussian supports float32/float64, got {dtype}")
    scale = default_scale(m, complex) if scale is None else float(scale)
    impl = IMPL[backend_for("seeded_measure", device, backend)]
    a = impl.materialize(seed, m, n, complex, scale, dtype, torch.device(device))
    return (a[0], a[1]) if complex else a[0]
