"""Shared helpers for the kernel tests (tests/test_tv.py, test_cmeasure.py, test_fourier.py,
test_dispatch.py).

Importing this module before anything imports triton (torch and metadip do not)
puts Triton in its CPU interpreter on machines without CUDA, so the Triton
kernels are exercised in CI.
``METADIP_TEST_REQUIRE=cpp,triton`` turns "backend unavailable" skips into
failures (CI sets it so a silently missing extension cannot pass).
"""

from __future__ import annotations

import os

import torch
import torch.utils._device  # poison's teardown clears its cache; older torch leaves it unimported

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from metadip import dispatch  # noqa: E402

FUSED = ("cpp", "triton")

# (device, backend) pairs every kernel test runs on; CUDA ones carry the gpu marker.
CASES = [
    pytest.param("cpu", "cpp", id="cpu-cpp"),
    pytest.param("cpu", "triton", id="cpu-triton"),
    pytest.param("cuda", "cpp", id="cuda-cpp", marks=pytest.mark.gpu),
    pytest.param("cuda", "triton", id="cuda-triton", marks=pytest.mark.gpu),
]


def require(device: str, backend: str) -> None:
    """Skips (or fails, if CI requires the backend) when backend cannot run on device."""
    why = dispatch.unavailable_reason(backend, device)
    if not why:
        return
    required = {b for b in os.environ.get("METADIP_TEST_REQUIRE", "").split(",") if b}
    if backend in required and device == "cpu":
        pytest.fail(f"backend {backend} is required on {device} but unavailable: {why}")
    pytest.skip(f"backend {backend} unavailable on {device}: {why}")


@pytest.fixture
def poison(monkeypatch):
    """Every output buffer the fused backends allocate starts as NaN, so unwritten elements fail."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def empty(*args, **kwargs):
        return real_empty(*args, **kwargs).fill_(float("nan"))

    def empty_like(*args, **kwargs):
        return real_empty_like(*args, **kwargs).fill_(float("nan"))

    # The Triton host wrappers allocate through torch.empty / torch.empty_like.
    monkeypatch.setattr(torch, "empty", empty)
    monkeypatch.setattr(torch, "empty_like", empty_like)
    from metadip import _ops

    if _ops.HAS_EXT:
        _ops._C.set_poison(True)
    yield
    if _ops.HAS_EXT:
        _ops._C.set_poison(False)
    # torch.device(...) as a context caches its set of factory functions on first use: a
    # cache filled while torch.empty was the poisoned one would leave the real torch.empty
    # outside every later device context (networks built "on meta" landing on the CPU and
    # drawing their init from the global RNG).
    monkeypatch.undo()
    torch.utils._device._device_constructors.cache_clear()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """Fresh standard-normal data (never zeros), made on the CPU for reproducibility."""
    return torch.randn(*shape, generator=gen(seed), dtype=dtype).to(device)


def close(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> None:
    """Asserts agreement with the float64 reference at the precision of dtype: elementwise,
    with the absolute tolerance in units of the reference's RMS (an element that cancels
    to near 0 keeps the rounding of the terms it was summed from), and as a whole,
    ‖got − want‖ ≤ tol · ‖want‖."""
    assert got.shape == want.shape, (got.shape, want.shape)
    assert torch.isfinite(got).all(), "non-finite output (an unwritten or NaN element)"
    rtol, atol = {torch.float64: (1e-10, 1e-12), torch.float32: (2e-5, 2e-5)}[dtype]
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    rms = float(want.square().mean().sqrt()) if want.numel() else 0.0
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol * max(1.0, rms))
    err, norm = float((got - want).norm()), float(want.norm())
    assert err <= rtol * max(norm, 1e-30) or err <= atol, f"error {err:.2e}, ‖want‖ {norm:.2e}"


def seeded_linear(
    backend: str, x: torch.Tensor, seed: int, m: int, cplx: bool, scale: float
) -> torch.Tensor:
    """z = A x as planes (P, B, m) with the seeded A, straight from a backend's kernels."""
    if backend == "cpp":
        from metadip import _ops

        return _ops.cm_lin(x, None, None, seed, m, cplx, scale)
    if backend == "triton":
        from metadip.backends import TritonOps

        return TritonOps._mod("cmeasure").linear(x, None, None, seed, m, cplx, scale)[1]
    raise ValueError(backend)


def aot_compile(op: str) -> str:
    """Compiles every Triton kernel of ``op`` for sm_90 in a clean subprocess
    (``tests/triton_aot.py``); fails the test with the compiler's message."""
    import subprocess
    import sys
    from pathlib import Path

    try:
        from triton.backends import backends
    except ImportError:
        backends = {}
    if "nvidia" not in backends:
        why = "this triton has no NVIDIA backend to compile for"
        required = {b for b in os.environ.get("METADIP_TEST_REQUIRE", "").split(",") if b}
        if "triton" in required:
            pytest.fail(f"{why} (METADIP_TEST_REQUIRE includes triton)")
        pytest.skip(why)
    script = Path(__file__).with_name("triton_aot.py")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, str(script), op], capture_output=True, text=True, env=env, timeout=900
    )
    if proc.returncode != 0:
        pytest.fail(f"Triton kernels of {op} do not compile for sm_90:\n{proc.stderr[-4000:]}")
    return proc.stdout
