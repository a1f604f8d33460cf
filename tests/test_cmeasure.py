"""Complex / real Gaussian measurements, dense and seeded, against the float64 reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from metadip import dispatch, reference
from metadip.reference import complex_measure_ref, dense_measure_ref
from tests.kernel_utils import (  # noqa: F401 (poison is a fixture)
    CASES,
    aot_compile,
    close,
    poison,
    randn,
    require,
    seeded_linear,
)

pytestmark = pytest.mark.usefixtures("poison")

# (B, n, m): m and n deliberately not multiples of any tile size. On the CPU, float32 with
# 2 <= B <= 8 takes the C++ streaming loops (tiles of 4 rows × 16 columns × 4 vectors), the
# rest ATen's GEMM.
SIZES = [(3, 131, 37), (1, 50, 1), (5, 17, 70), (8, 1000, 133), (9, 40, 9), (2, 16, 4)]


def _planes(m: int, n: int, seed: int, zero_row: bool = True):
    ar, ai = randn(m, n, seed=seed), randn(m, n, seed=seed + 1)
    if zero_row and m > 1:
        # |Ax| = 0 on that row: the gradient there must be 0, not NaN.
        ar[m // 2] = 0
        ai[m // 2] = 0
    return ar, ai


@pytest.mark.parametrize(("device", "backend"), CASES)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "B{}n{}m{}".format(*s))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_dense_forward_and_gradient(device, backend, size, dtype):
    require(device, backend)
    b, n, m = size
    x64, g = randn(b, n, seed=n), randn(b, m, seed=m)
    ar, ai = _planes(m, n, seed=3)
    x = x64.to(device, dtype).requires_grad_()
    y = dispatch.complex_measure(x, ar.to(device, dtype), ai.to(device, dtype), backend=backend)
    (gx,) = torch.autograd.grad((y * g.to(device, dtype)).sum(), x)

    xr = x64.clone().requires_grad_()
    want = complex_measure_ref(xr, ar, ai)
    (gwant,) = torch.autograd.grad((want * g).sum(), xr)
    close(y, want.detach(), dtype)
    close(gx, gwant, dtype)


def _second(fn, x64, g, v, device):
    x = x64.to(device).requires_grad_()
    gg = g.to(device).requires_grad_()
    (gx,) = torch.autograd.grad((fn(x) * gg).sum(), x, create_graph=True)
    return torch.autograd.grad((gx * v.to(device)).sum(), (x, gg))


@pytest.mark.parametrize(("device", "backend"), CASES)
def test_dense_double_backward_matches_reference(device, backend):
    require(device, backend)
    b, n, m = 3, 41, 19
    x64, g, v = randn(b, n, seed=1), randn(b, m, seed=2), randn(b, n, seed=3)
    ar, ai = _planes(m, n, seed=4)
    a_d = (ar.to(device), ai.to(device))
    got = _second(lambda x: dispatch.complex_measure(x, *a_d, backend=backend), x64, g, v, device)
    want = _second(lambda x: complex_measure_ref(x, ar, ai), x64, g, v, "cpu")
    for a, w in zip(got, want, strict=True):
        close(a, w, torch.float64)


@pytest.mark.parametrize(("device", "backend"), CASES)
def test_dense_gradcheck_gradgradcheck(device, backend):
    """Including the gradients with respect to both planes of A."""
    require(device, backend)
    x = randn(2, 6, seed=5, device=device).requires_grad_()
    ar = randn(5, 6, seed=6, device=device).requires_grad_()
    ai = randn(5, 6, seed=7, device=device).requires_grad_()

    def fn(x, ar, ai):
        return dispatch.complex_measure(x, ar, ai, backend=backend)

    assert gradcheck(fn, (x, ar, ai), fast_mode=True)
    assert gradgradcheck(fn, (x, ar, ai), fast_mode=True)


@pytest.mark.parametrize(("device", "backend"), CASES)
def test_zero_measurement_has_zero_gradient(device, backend):
    require(device, backend)
    ar, ai = _planes(4, 9, seed=8)
    x = randn(2, 9, seed=9, device=device).requires_grad_()
    y = dispatch.complex_measure(x, ar.to(device), ai.to(device), backend=backend)
    assert (y[:, 2] == 0).all()
    (gx,) = torch.autograd.grad(y[:, 2].sum(), x)
    assert torch.equal(gx, torch.zeros_like(gx))


@pytest.mark.parametrize(("device", "backend"), CASES)
def test_bad_input_is_rejected(device, backend):
    require(device, backend)
    x = randn(2, 9, seed=0, device=device)
    a = randn(4, 9, seed=1, device=device)
    with pytest.raises(ValueError, match="n=9"):
        dispatch.complex_measure(x, a[:, :8], a[:, :8], backend=backend)
    with pytest.raises(ValueError, match="one shape"):
        dispatch.complex_measure(x, a, a[:3], backend=backend)
    with pytest.raises(ValueError, match=r"\(B, n\)"):
        dispatch.complex_measure(x[0], a, a, backend=backend)


@pytest.mark.parametrize(("device", "backend"), CASES)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "B{}n{}m{}".format(*s))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_real_dense_measure_adjoint_and_gradient(device, backend, size, dtype):
    require(device, backend)
    b, n, m = size
    x64, g = randn(b, n, seed=n), randn(b, m, seed=m)
    a = randn(m, n, seed=5)
    a_d = a.to(device, dtype)
    x = x64.to(device, dtype).requires_grad_()
    y = dispatch.dense_measure(x, a_d, backend=backend)
    (gx,) = torch.autograd.grad((y * g.to(device, dtype)).sum(), x)
    close(y, x64 @ a.t(), dtype)
    close(gx, g @ a, dtype)
    close(dispatch.dense_adjoint(g.to(device, dtype), a_d, backend=backend), g @ a, dtype)


@pytest.mark.parametrize(("device", "backend"), CASES)
def test_real_dense_double_backward_and_gradcheck(device, backend):
    require(device, backend)
    b, n, m = 3, 41, 19
    x64, g, v = randn(b, n, seed=1), randn(b, m, seed=2), randn(b, n, seed=3)
    a = randn(m, n, seed=4)
    a_d = a.to(device)
    # Linear in x, so the second derivative lives in the cotangent: d<Aᵀg, v>/dg = A v.
    x = x64.to(device).requires_grad_()
    gg = g.to(device).requires_grad_()
    y = dispatch.dense_measure(x, a_d, backend=backend)
    (gx,) = torch.autograd.grad((y * gg).sum(), x, create_graph=True)
    (g2,) = torch.autograd.grad((gx * v.to(device)).sum(), gg)
    close(g2, dense_measure_ref(v, a), torch.float64)
    x = randn(2, 6, seed=5, device=device).requires_grad_()
    a_g = randn(5, 6, seed=6, device=device).requires_grad_()

    def fn(x, a):
        return dispatch.dense_measure(x, a, backend=backend)

    assert gradcheck(fn, (x, a_g), fast_mode=True)
    assert gradgradcheck(fn, (x, a_g), fast_mode=True)


@pytest.mark.parametrize(("device", "backend"), CASES)
def test_real_dense_bad_input_is_rejected(device, backend):
    require(device, backend)
    x = randn(2, 9, seed=0, device=device)
    a = randn(4, 9, seed=1, device=device)
    with pytest.raises(ValueError, match="same n"):
        dispatch.dense_measure(x, a[:, :8], backend=backend)
    with pytest.raises(ValueError, match="same m"):
        dispatch.dense_adjoint(x, a, backend=backend)
    with pytest.raises(TypeError, match="dtype"):
        dispatch.dense_measure(x, a.float(), backend=backend)
    with pytest.raises(TypeError, match="dtype"):
        dispatch.dense_adjoint(x[:, :4], a.float(), backend=backend)


@pytest.mark.parametrize(("device", "backend"), CASES)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "B{}n{}m{}".format(*s))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cplx", [False, True], ids=["real", "complex"])
def test_dense_normal_matches_reference(device, backend, size, dtype, cplx):
    """A fit's value and gradient in one pass (C++: the streamed rows, their tails, ATen
    past 8 vectors) against float64: real (A x, Aᵀ(A x − y)); complex, with a zero row
    (|z| = 0 must give 0, not NaN), (|A x|, Re Aᴴ((|z| − y) z/|z|))."""
    require(device, backend)
    b, n, m = size
    x64, y64 = randn(b, n, seed=n), randn(b, m, seed=m)
    a, ai = _planes(m, n, seed=7)
    if cplx:
        value = complex_measure_ref(x64, a, ai)
        want = torch.autograd.functional.vjp(
            lambda x: complex_measure_ref(x, a, ai), x64, value - y64
        )[1]
    else:
        ai, value = None, x64 @ a.t()
        want = (value - y64) @ a
    d = {"device": device, "dtype": dtype}
    got_value, g = dispatch.dense_normal(
        x64.to(**d), a.to(**d), y64.to(**d), None if ai is None else ai.to(**d), backend=backend
    )
    close(got_value, value, dtype)
    # Relative to the largest entry: a sum of m residuals loses float32 digits on small ones.
    scale = want.abs().max()
    close(g / scale, want / scale, dtype)


@pytest.mark.parametrize(("device", "backend"), CASES)
def test_dense_normal_bad_input_is_rejected(device, backend):
    require(device, backend)
    x, a = randn(2, 9, seed=0, device=device), randn(4, 9, seed=1, device=device)
    y = randn(2, 4, seed=2, device=device)
    with pytest.raises(ValueError, match="same n"):
        dispatch.dense_normal(x, a[:, :8], y, backend=backend)
    with pytest.raises(ValueError, match=r"y \(B, m\)"):
        dispatch.dense_normal(x, a, y[:, :3], backend=backend)
    with pytest.raises(TypeError, match="dtype"):
        dispatch.dense_normal(x, a, y.float(), backend=backend)
    with pytest.raises(ValueError, match="a_imag like A"):
        dispatch.dense_normal(x, a, y, a[:3], backend=backend)


# ----------------------------------------------------------------------------- seeded


@pytest.mark.parametrize(("device", "backend"), CASES)
@pytest.mark.parametrize("cplx", [True, False], ids=["complex", "real"])
def test_seeded_matrix_equals_materialized_copy_exactly(device, backend, cplx):
    """x = I reads the in-kernel matrix out column by column (products with 1 and 0 are exact)."""
    require(device, backend)
    m, n, seed, scale = 37, 53, 2**40 + 17, 0.3
    a = dispatch.seeded_gaussian(
        seed, m, n, complex=cplx, scale=scale, dtype=torch.float64, device=device, backend=backend
    )
    planes = torch.stack(a) if cplx else a[None]
    eye = torch.eye(n, dtype=torch.float64, device=device)
    z = seeded_linear(backend, eye, seed, m, cplx, scale)
    assert torch.equal(z, planes.transpose(1, 2))
    # The adjoint generates the same entries: with one-hot cotangents it returns A's rows.
    x = torch.zeros(m, n, dtype=torch.float64, device=device, requires_grad=True)
    y = dispatch.seeded_measure(x, seed, m, complex=False, scale=scale, backend=backend)
    (rows,) = torch.autograd.grad(y, x, torch.eye(m, dtype=torch.float64, device=device))
    a_real = dispatch.seeded_gaussian(
        seed, m, n, complex=False, scale=scale, dtype=torch.float64, device=device, backend=backend
    )
    assert torch.equal(rows, a_real)


@pytest.mark.parametrize(("device", "backend"), CASES)
@pytest.mark.parametrize("cplx", [True, False], ids=["complex", "real"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_seeded_measure_matches_reference(device, backend, cplx, dtype):
    """Against the torch reference matrix (independent Philox/Box–Muller implementation)."""
    require(device, backend)
    b, n, m, seed = 3, 131, 37, 99
    x64, g = randn(b, n, seed=12), randn(b, m, seed=13)
    x = x64.to(device, dtype).requires_grad_()
    y = dispatch.seeded_measure(x, seed, m, complex=cplx, backend=backend)
    (gx,) = torch.autograd.grad((y * g.to(device, dtype)).sum(), x)

    scale = dispatch.default_scale(m, cplx)
    a = reference.seeded_gaussian_ref(seed, m, n, cplx, scale, torch.float64, "cpu")
    xr = x64.clone().requires_grad_()
    want = complex_measure_ref(xr, a[0], a[1]) if cplx else xr @ a[0].t()
    (gwant,) = torch.autograd.grad((want * g).sum(), xr)
    # float32 log/sin/cos may differ by an ulp between backends: 1e-6 relative in A.
    torch.testing.assert_close(y.double().cpu(), want.detach(), rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(gx.double().cpu(), gwant, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize(("device", "backend"), CASES)
def test_seeded_gradcheck_gradgradcheck(device, backend):
    require(device, backend)
    x = randn(2, 7, seed=14, device=device).requires_grad_()
    for cplx in (True, False):

        def fn(x, cplx=cplx):
            return dispatch.seeded_measure(x, 5, 6, complex=cplx, backend=backend)

        assert gradcheck(fn, (x,), fast_mode=True)
        assert gradgradcheck(fn, (x,), fast_mode=True)


@pytest.mark.parametrize(
    ("counter", "key", "want"),
    [
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((2**32 - 1,) * 4, (2**32 - 1,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ],
)
def test_reference_philox_known_answers(counter, key, want):
    """Philox4x32-10 known-answer vectors of Random123 (kat_vectors)."""
    words = reference._philox4x32_10(tuple(np.array([c], np.uint64) for c in counter), *key)
    assert tuple(int(w[0]) for w in words) == want


def test_reference_philox_keys_and_counters():
    """seed -> (lo, hi) key and (row, col) -> counter (col, row, 0, 0)."""
    seed, row, col = 0x299F31D0A4093822, 7, 11
    got = reference.philox_ref(seed, np.array([[row]], np.uint64), np.array([[col]], np.uint64))
    one = tuple(np.array([c], np.uint64) for c in (col, row, 0, 0))
    want = reference._philox4x32_10(one, 0xA4093822, 0x299F31D0)
    assert (int(got[0][0, 0]), int(got[1][0, 0])) == (int(want[0][0]), int(want[1][0]))


def test_seeded_matrix_statistics():
    """Entries are N(0, scale²) per plane: mean, variance and plane correlation."""
    m, n = 256, 256
    ar, ai = dispatch.seeded_gaussian(3, m, n, dtype=torch.float64, backend="torch")
    scale = dispatch.default_scale(m)
    for a in (ar, ai):
        z = a / scale
        assert abs(z.mean().item()) < 4 / math.sqrt(m * n)
        assert abs(z.var().item() - 1) < 0.03
    assert abs((ar * ai).mean().item() / scale**2) < 4 / math.sqrt(m * n)
    # Different seeds give (almost surely) different matrices.
    other = dispatch.seeded_gaussian(4, m, n, complex=False, backend="torch")
    assert not torch.equal(other, dispatch.seeded_gaussian(3, m, n, complex=False, backend="torch"))


@pytest.mark.parametrize(("device", "backend"), CASES)
def test_seeded_matrix_agrees_across_backends(device, backend):
    require(device, backend)
    m, n = 33, 70
    got = dispatch.seeded_gaussian(9, m, n, dtype=torch.float64, device=device, backend=backend)
    want = dispatch.seeded_gaussian(9, m, n, dtype=torch.float64, backend="torch")
    scale = dispatch.default_scale(m)
    for a, w in zip(got, want, strict=True):
        # Identical integers; float32 transcendental rounding only.
        torch.testing.assert_close(a.cpu(), w, rtol=0, atol=1e-6 * 8 * scale)


@pytest.mark.parametrize(("device", "backend"), CASES)
def test_seeded_adjoint_is_the_transpose(device, backend):
    """<A x, y> = <x, Aᵀ y>, Aᵀ y matches the reference, and it is twice differentiable."""
    require(device, backend)
    b, n, m, seed = 3, 131, 37, 21
    x, y = randn(b, n, seed=15, device=device), randn(b, m, seed=16, device=device)
    ax = dispatch.seeded_measure(x, seed, m, complex=False, backend=backend)
    aty = dispatch.seeded_adjoint(y, seed, n, backend=backend)
    torch.testing.assert_close((ax * y).sum(), (x * aty).sum(), rtol=1e-12, atol=1e-12)
    a = reference.seeded_gaussian_ref(
        seed, m, n, False, dispatch.default_scale(m, False), torch.float64, "cpu"
    )[0]
    torch.testing.assert_close(aty.cpu(), y.cpu() @ a, rtol=2e-5, atol=2e-5)
    yy = y[:2, :5].clone().requires_grad_()

    def fn(t):
        return dispatch.seeded_adjoint(t, seed, 4, backend=backend)

    assert gradcheck(fn, (yy,), fast_mode=True)
    assert gradgradcheck(fn, (yy,), fast_mode=True)


def test_seeded_arguments_are_validated():
    x = randn(2, 5, seed=0)
    with pytest.raises(ValueError, match="seed"):
        dispatch.seeded_measure(x, -1, 3)
    with pytest.raises(ValueError, match="m, n"):
        dispatch.seeded_gaussian(0, 0, 5)
    with pytest.raises(TypeError, match="float32/float64"):
        dispatch.seeded_gaussian(0, 2, 5, dtype=torch.int32)


@pytest.mark.slow
def test_triton_kernels_compile_for_sm90():
    out = aot_compile("cmeasure")
    assert "fp64" in out and "fp32" in out
