"""TV: every fused backend against the float64 torch reference, to second order."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from metadip import dispatch
from metadip.reference import tv_ref
from tests.kernel_utils import (  # noqa: F401 (poison is a fixture)
    CASES,
    aot_compile,
    close,
    poison,
    randn,
    require,
)

pytestmark = pytest.mark.usefixtures("poison")

SHAPES = [(3, 1, 97, 131), (2, 3, 16, 17), (1, 3, 1, 1), (1, 1, 1, 5), (2, 1, 6, 1)]


@pytest.mark.parametrize(("device", "backend"), CASES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_forward_and_gradient(device, backend, shape, dtype):
    require(device, backend)
    x64 = randn(*shape, seed=hash(shape) % 1000)
    w = randn(shape[0], seed=7)
    x = x64.to(device, dtype).requires_grad_()
    val = dispatch.tv(x, 1e-6, backend=backend)
    (grad,) = torch.autograd.grad((val * w.to(device, dtype)).sum(), x)

    xr = x64.clone().requires_grad_()
    want = tv_ref(xr, 1e-6)
    (gwant,) = torch.autograd.grad((want * w).sum(), xr)
    close(val, want.detach(), dtype)
    close(grad, gwant, dtype)


@pytest.mark.parametrize(("device", "backend"), CASES)
@pytest.mark.parametrize("eps", [1e-6, 1e-2])
def test_double_backward_matches_reference(device, backend, eps):
    """d/dx and d/dg of <∂(g·tv)/∂x, v>: the Hessian–vector product path."""
    require(device, backend)
    shape = (2, 3, 13, 17)
    x64, v, g = randn(*shape, seed=1), randn(*shape, seed=2), randn(2, seed=3)

    def second(fn, dev):
        x = x64.to(dev).requires_grad_()
        gg = g.to(dev).requires_grad_()
        (gx,) = torch.autograd.grad((fn(x) * gg).sum(), x, create_graph=True)
        return torch.autograd.grad((gx * v.to(dev)).sum(), (x, gg))

    got = second(lambda x: dispatch.tv(x, eps, backend=backend), device)
    want = second(lambda x: tv_ref(x, eps), "cpu")
    for a, b in zip(got, want, strict=True):
        close(a, b, torch.float64)


@pytest.mark.parametrize(("device", "backend"), CASES)
def test_gradcheck_gradgradcheck(device, backend):
    require(device, backend)
    x = randn(1, 2, 3, 4, seed=11, device=device).requires_grad_()

    def fn(t):
        return dispatch.tv(t, 1e-3, backend=backend)

    assert gradcheck(fn, (x,), fast_mode=True)
    assert gradgradcheck(fn, (x,), fast_mode=True)


@pytest.mark.parametrize(("device", "backend"), CASES)
def test_bad_input_is_rejected(device, backend):
    require(device, backend)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        dispatch.tv(randn(3, 4, 5, seed=0, device=device), backend=backend)
    with pytest.raises(ValueError, match="eps > 0"):
        dispatch.tv(randn(1, 1, 4, 5, seed=0, device=device), 0.0, backend=backend)


@pytest.mark.parametrize(("device", "backend"), CASES)
def test_third_order_is_refused_not_wrong(device, backend):
    """Only two orders are implemented; a third must raise rather than return zeros."""
    require(device, backend)
    x = randn(1, 1, 4, 5, seed=4, device=device).requires_grad_()
    (gx,) = torch.autograd.grad(dispatch.tv(x, backend=backend).sum(), x, create_graph=True)
    (hv,) = torch.autograd.grad((gx * gx).sum(), x, create_graph=True)
    with pytest.raises((NotImplementedError, RuntimeError), match="third-order"):
        torch.autograd.grad(hv.sum(), x)


@pytest.mark.parametrize(("device", "backend"), CASES)
def test_value_only_forward(device, backend):
    """Without autograd the fused forward may skip the gradient; the value must not change."""
    require(device, backend)
    x64 = randn(2, 3, 11, 13, seed=5)
    with torch.no_grad():
        got = dispatch.tv(x64.to(device), backend=backend)
    close(got, tv_ref(x64), torch.float64)


def test_cpp_gradient_recomputed_when_forward_skipped_it():
    """If the C++ forward ran without the gradient, backward recomputes it instead of failing."""
    require("cpu", "cpp")
    from metadip import _ops

    x = randn(1, 2, 5, 6, seed=6).requires_grad_()
    (got,) = torch.autograd.grad(_ops.tv_fwd(x, 1e-6, False)[0].sum(), x)
    (want,) = torch.autograd.grad(tv_ref(x, 1e-6).sum(), x)
    close(got, want, torch.float64)


@pytest.mark.slow
def test_triton_kernels_compile_for_sm90():
    out = aot_compile("tv")
    assert "fp64" in out and "fp32" in out


def test_cpp_kernel_is_the_same_on_any_thread_count():
    """The C++ kernels run on ATen's pool (torch.set_num_threads governs them) over fixed
    work units, so the result does not depend on the thread count."""
    require("cpu", "cpp")
    x = torch.rand(2, 3, 67, 45, dtype=torch.float64, requires_grad=True)
    before = torch.get_num_threads()
    out = {}
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            value = dispatch.tv(x, 1e-6, backend="cpp")
            (grad,) = torch.autograd.grad(value.sum(), x)
            out[n] = (value, grad)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(out[1][0], out[2][0]) and torch.equal(out[1][1], out[2][1])
