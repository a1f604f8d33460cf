"""Fourier features: every fused backend against the float64 torch reference, to second order."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from metadip import dispatch
from metadip.reference import fourier_features_ref
from tests.kernel_utils import (  # noqa: F401 (poison is a fixture)
    CASES,
    aot_compile,
    close,
    poison,
    randn,
    require,
)

pytestmark = pytest.mark.usefixtures("poison")

# (k, H, W)
SIZES = [(5, 97, 131), (1, 1, 1), (3, 7, 1), (4, 16, 16)]


@pytest.mark.parametrize(("device", "backend"), CASES)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "k{}_{}x{}".format(*s))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_forward_and_gradient(device, backend, size, dtype):
    require(device, backend)
    k, h, w = size
    b64 = 2 * randn(k, 2, seed=k + h)
    g = randn(2 * k, h, w, seed=w)
    b = b64.to(device, dtype).requires_grad_()
    out = dispatch.fourier_features(b, h, w, backend=backend)
    (gb,) = torch.autograd.grad((out * g.to(device, dtype)).sum(), b)

    br = b64.clone().requires_grad_()
    want = fourier_features_ref(br, h, w)
    (gwant,) = torch.autograd.grad((want * g).sum(), br)
    close(out, want.detach(), dtype)
    # float32 sums over H·W terms of size ~2π: scale the tolerance with the sum's magnitude.
    if dtype == torch.float32:
        torch.testing.assert_close(gb.double().cpu(), gwant, rtol=1e-4, atol=1e-4 * h * w)
    else:
        close(gb, gwant, dtype)


@pytest.mark.parametrize(("device", "backend"), CASES)
def test_double_backward_matches_reference(device, backend):
    require(device, backend)
    k, h, w = 3, 9, 11
    b64, g, v = randn(k, 2, seed=1), randn(2 * k, h, w, seed=2), randn(k, 2, seed=3)

    def second(fn, dev):
        b = b64.to(dev).requires_grad_()
        gg = g.to(dev).requires_grad_()
        (gb,) = torch.autograd.grad((fn(b) * gg).sum(), b, create_graph=True)
        return torch.autograd.grad((gb * v.to(dev)).sum(), (b, gg))

    got = second(lambda b: dispatch.fourier_features(b, h, w, backend=backend), device)
    want = second(lambda b: fourier_features_ref(b, h, w), "cpu")
    for a, wnt in zip(got, want, strict=True):
        close(a, wnt, torch.float64)


@pytest.mark.parametrize(("device", "backend"), CASES)
def test_gradcheck_gradgradcheck(device, backend):
    require(device, backend)
    b = randn(2, 2, seed=4, device=device).requires_grad_()

    def fn(t):
        return dispatch.fourier_features(t, 3, 4, backend=backend)

    assert gradcheck(fn, (b,), fast_mode=True)
    assert gradgradcheck(fn, (b,), fast_mode=True)


@pytest.mark.parametrize(("device", "backend"), CASES)
def test_bad_input_is_rejected(device, backend):
    require(device, backend)
    with pytest.raises(ValueError, match=r"\(k, 2\)"):
        dispatch.fourier_features(randn(3, 3, seed=0, device=device), 4, 4, backend=backend)
    with pytest.raises(ValueError, match=">= 1"):
        dispatch.fourier_features(randn(3, 2, seed=0, device=device), 0, 4, backend=backend)


@pytest.mark.slow
def test_triton_kernels_compile_for_sm90():
    out = aot_compile("fourier")
    assert "fp64" in out and "fp32" in out
