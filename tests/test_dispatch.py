"""metadip.dispatch: backend order, forcing, availability probing, routing of functional."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from metadip import _ops, backends, dispatch, functional, reference
from tests.kernel_utils import randn


@pytest.fixture(autouse=True)
def _fresh_probe_cache(monkeypatch):
    monkeypatch.delenv("METADIP_BACKEND", raising=False)
    dispatch._probe.cache_clear()
    yield
    dispatch._probe.cache_clear()


def test_torch_is_always_available_and_report_is_complete():
    report = dispatch.available("cpu")
    assert set(report) == set(dispatch.BACKENDS)
    assert report["torch"] is True
    assert dispatch.unavailable_reason("torch", "cpu") == ""


def test_cpp_availability_follows_the_extension():
    assert dispatch.available("cpu")["cpp"] == _ops.HAS_EXT


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert dispatch.available("cpu")["triton"] is False
    assert "TRITON_INTERPRET" in dispatch.unavailable_reason("triton", "cpu")


def test_default_cpu_order_is_cpp_then_torch_never_triton(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    want = "cpp" if _ops.HAS_EXT else "torch"
    for op in ("tv", "complex_measure", "fourier_features", "seeded_measure"):
        assert dispatch.backend_for(op, "cpu") == want


def test_default_falls_back_to_torch_without_extension(monkeypatch):
    monkeypatch.setattr(_ops, "HAS_EXT", False)
    monkeypatch.setattr(_ops, "EXT_ERROR", "metadip._C is not importable (test)")
    assert dispatch.backend_for("tv", "cpu") == "torch"
    assert "not importable" in dispatch.unavailable_reason("cpp", "cpu")


def test_forced_backend_via_environment(monkeypatch):
    monkeypatch.setenv("METADIP_BACKEND", "torch")
    assert dispatch.backend_for("tv", "cpu") == "torch"
    monkeypatch.setenv("METADIP_BACKEND", "cuda-magic")
    with pytest.raises(ValueError, match="triton"):
        dispatch.backend_for("tv", "cpu")


def test_forced_unavailable_backend_raises_with_reason(monkeypatch):
    monkeypatch.setattr(_ops, "HAS_EXT", False)
    monkeypatch.setattr(_ops, "EXT_ERROR", "metadip._C is not importable (test)")
    monkeypatch.setenv("METADIP_BACKEND", "cpp")
    with pytest.raises(dispatch.BackendUnavailable, match="not importable"):
        functional.tv(randn(1, 1, 3, 3, seed=0))
    monkeypatch.setenv("METADIP_BACKEND", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(dispatch.BackendUnavailable, match="TRITON_INTERPRET"):
        functional.fourier_features(randn(2, 2, seed=0), 3, 3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_request_without_gpu_raises():
    with pytest.raises(dispatch.BackendUnavailable, match="CUDA"):
        dispatch.backend_for("tv", "cuda", backend="triton")


def test_probe_rejects_a_backend_that_computes_wrong_values(monkeypatch):
    """Availability means 'ran and matched the reference', not 'imported'."""
    if not _ops.HAS_EXT:
        pytest.skip("extension not built: the probe never runs")

    def wrong(x, eps):
        return backends.TorchOps.tv(x, eps) + 1

    monkeypatch.setattr(backends.CppOps, "tv", staticmethod(wrong))
    assert "disagrees" in dispatch.unavailable_reason("cpp", "cpu")


@pytest.mark.parametrize("backend", ["torch", "cpp", "triton"])
def test_functional_routes_through_dispatch(monkeypatch, backend):
    """functional.tv / complex_measure / fourier_features call the selected backend."""
    if dispatch.unavailable_reason(backend, "cpu"):
        pytest.skip(dispatch.unavailable_reason(backend, "cpu"))
    impl = backends.IMPL[backend]
    calls = []
    for name in ("tv", "complex_measure", "fourier_features"):
        real = getattr(impl, name)

        def spy(*args, _real=real, _name=name):
            calls.append(_name)
            return _real(*args)

        monkeypatch.setattr(impl, name, staticmethod(spy))
    monkeypatch.setenv("METADIP_BACKEND", backend)
    x = randn(1, 1, 4, 4, seed=1)
    v, a = randn(2, 5, seed=2), randn(3, 5, seed=3)
    torch.testing.assert_close(functional.tv(x), reference.tv_ref(x))
    torch.testing.assert_close(
        functional.complex_measure(v, a, a), reference.complex_measure_ref(v, a, a)
    )
    b = randn(2, 2, seed=4)
    torch.testing.assert_close(
        functional.fourier_features(b, 3, 4), reference.fourier_features_ref(b, 3, 4)
    )
    assert calls == ["tv", "complex_measure", "fourier_features"]


def test_seeded_gaussian_shapes_and_default_scale():
    ar, ai = dispatch.seeded_gaussian(1, 4, 6, backend="torch")
    assert ar.shape == ai.shape == (4, 6) and ar.dtype == torch.float32
    a = dispatch.seeded_gaussian(1, 4, 6, complex=False, dtype=torch.float64, backend="torch")
    assert a.shape == (4, 6) and a.dtype == torch.float64
    assert dispatch.default_scale(8) == pytest.approx(0.25)
    assert dispatch.default_scale(16, complex=False) == pytest.approx(0.25)


def test_seeded_measure_is_the_materialized_operator_on_the_torch_backend():
    x = randn(2, 6, seed=5)
    ar, ai = dispatch.seeded_gaussian(8, 3, 6, dtype=torch.float64, backend="torch")
    y = dispatch.seeded_measure(x, 8, 3, backend="torch")
    assert torch.equal(y, reference.complex_measure_ref(x, ar, ai))


def test_other_devices_fall_back_to_the_torch_reference():
    # The meta device stands for any device without metadip kernels (mps, xpu ...).
    for op in ("tv", "complex_measure", "fourier_features", "seeded_measure"):
        assert dispatch.backend_for(op, "meta") == "torch"
    x = torch.empty(2, 3, 8, 8, device="meta")
    assert functional.tv(x).shape == (2,) and functional.tv(x).device.type == "meta"
    assert dispatch.available("meta") == {"triton": False, "cpp": False, "torch": True}
    with pytest.raises(dispatch.BackendUnavailable, match="run on cpu and cuda only, not on meta"):
        dispatch.backend_for("tv", "meta", backend="cpp")


def _op_cases() -> dict[str, tuple]:
    """Arguments for every ``metadip::`` operator, stored and seeded (``ar = None``)
    matrices, float64; the inputs of operators with a backward formula require grad."""
    x, v = randn(2, 3, 5, 6, seed=6), randn(2, 7, seed=7)
    ar, ai, b = randn(4, 7, seed=8), randn(4, 7, seed=9), randn(3, 2, seed=10)
    w, y = randn(2, 2, 4, seed=11), randn(2, 4, seed=12).abs()
    grad = lambda *ts: [t.requires_grad_() for t in ts]  # noqa: E731
    grad(x, v, ar, ai, b, w)
    return {
        "tv_fwd": (x, 1e-6, True),
        # The Hessian product is the last order tv differentiates (its backward raises).
        "tv_hvp": (x.detach(), randn(2, 3, 5, 6, seed=13), 1e-6),
        "cm_lin": (v, ar, ai, 0, 4, True, 1.0),
        "cm_lin_seeded": (v, None, None, 3, 4, True, 0.5),
        "cm_adj": (w, ar, ai, 0, 7, 1.0),
        "cm_meas": (v, ar, ai, 0, 4, 1.0),
        "cm_adj_phase": (y.detach(), w.detach(), ar.detach(), ai.detach(), 0, 7, 1.0),
        "cm_normal": (v.detach(), ar.detach(), ai.detach(), y),
        "cm_materialize": (3, 4, 7, True, 0.5, v.detach()),
        "ff_fwd": (b, 5, 6),
        "ff_bwd": (randn(6, 5, 6, seed=14), b, 5, 6),
    }


@pytest.mark.parametrize("case", list(_op_cases()))
def test_extension_operators_pass_torch_opcheck(case):
    """Schema, fake (meta) kernel, autograd registration and AOT dispatch of every
    ``metadip::`` operator (``torch.library.opcheck``): what torch.compile relies on."""
    if not _ops.HAS_EXT:
        pytest.skip("extension not built: no operators are registered")
    args = _op_cases()[case]
    torch.library.opcheck(getattr(_ops, case.removesuffix("_seeded")), args)


def test_first_kernel_call_does_not_import_the_compiler():
    """A fresh process's first reconstruction runs the extension's operators without
    importing torch._dynamo (torch.library.custom_op kernels would: ~1.2 s per process)."""
    if not _ops.HAS_EXT:
        pytest.skip("extension not built: no operators are registered")
    code = (
        "import sys, torch\n"
        "from metadip import Denoise, dispatch, reconstruct\n"
        "x = torch.rand(3, 32, 32)\n"
        "op = Denoise(x.shape, 0.1)\n"
        "reconstruct(op.measure(x, torch.Generator().manual_seed(0)), op, steps=1)\n"
        "assert dispatch.backend_for('tv', 'cpu') == 'cpp'\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
