"""The reference ops: exact values against independent formulas, and twice differentiable."""

from __future__ import annotations

import math

import pytest
import torch

from metadip.reference import complex_measure_ref, fourier_features_ref, tv_ref


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_tv_matches_explicit_loops():
    x = _rand(2, 2, 4, 5)
    eps = 1e-3
    expected = torch.zeros(2, dtype=torch.float64)
    for b in range(2):
        for c in range(2):
            for i in range(4):
                for j in range(5):
                    dh = x[b, c, i + 1, j] - x[b, c, i, j] if i < 3 else 0.0
                    dw = x[b, c, i, j + 1] - x[b, c, i, j] if j < 4 else 0.0
                    expected[b] += math.sqrt(dh**2 + dw**2 + eps)
    torch.testing.assert_close(tv_ref(x, eps), expected, rtol=1e-12, atol=0)


def test_tv_of_constant_image_is_its_floor():
    x = torch.full((1, 3, 7, 9), 0.3, dtype=torch.float64)
    assert tv_ref(x, 1e-4).item() == pytest.approx(3 * 7 * 9 * math.sqrt(1e-4))


def test_tv_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        tv_ref(_rand(3, 4, 4))
    with pytest.raises(ValueError, match="eps > 0"):
        tv_ref(_rand(1, 1, 4, 4), eps=0.0)


@pytest.mark.parametrize("shape", [(1, 1, 3, 4), (3, 2, 4, 3)])
def test_tv_grad_and_gradgrad(shape):
    x = _rand(*shape).requires_grad_()
    f = lambda t: tv_ref(t, 1e-2)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))


def test_complex_measure_matches_complex_matmul():
    x, ar, ai = _rand(3, 7), _rand(5, 7, seed=1) - 0.5, _rand(5, 7, seed=2) - 0.5
    a = torch.complex(ar, ai)
    expected = (x.to(a.dtype) @ a.t()).abs()
    torch.testing.assert_close(complex_measure_ref(x, ar, ai), expected, rtol=1e-12, atol=1e-14)


def test_complex_measure_grads():
    x = _rand(3, 6).requires_grad_()
    ar = (_rand(5, 6, seed=1) - 0.5).requires_grad_()
    ai = (_rand(5, 6, seed=2) - 0.5).requires_grad_()
    assert torch.autograd.gradcheck(complex_measure_ref, (x, ar, ai))
    assert torch.autograd.gradgradcheck(complex_measure_ref, (x, ar, ai))


def test_complex_measure_safe_at_zero():
    x = torch.zeros(2, 4, dtype=torch.float64, requires_grad=True)
    ar, ai = _rand(3, 4), _rand(3, 4, seed=1)
    y = complex_measure_ref(x, ar, ai)
    (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (gg,) = torch.autograd.grad(g.sum(), x, allow_unused=True, materialize_grads=True)
    assert torch.isfinite(g).all() and torch.isfinite(gg).all()
    assert (y == 0).all()


def test_complex_measure_rejects_mismatch():
    with pytest.raises(ValueError, match="n=4"):
        complex_measure_ref(_rand(2, 4), _rand(3, 5), _rand(3, 5))
    with pytest.raises(ValueError, match="one shape"):
        complex_measure_ref(_rand(2, 4), _rand(3, 4), _rand(2, 4))


def test_fourier_features_values():
    b = torch.tensor([[1.0, 0.0], [0.5, 2.0]], dtype=torch.float64)
    ff = fourier_features_ref(b, 3, 5)
    assert ff.shape == (4, 3, 5)
    i, j = 2, 3
    phase = 2 * math.pi * (0.5 * i / 3 + 2.0 * j / 5)
    assert ff[1, i, j].item() == pytest.approx(math.sin(phase), abs=1e-12)
    assert ff[3, i, j].item() == pytest.approx(math.cos(phase), abs=1e-12)
    assert ff[0, 1, 4].item() == pytest.approx(math.sin(2 * math.pi / 3), abs=1e-12)


def test_fourier_features_grads():
    b = _rand(3, 2).requires_grad_()
    f = lambda t: fourier_features_ref(t, 4, 3)  # noqa: E731
    assert torch.autograd.gradcheck(f, (b,))
    assert torch.autograd.gradgradcheck(f, (b,))


def test_fourier_features_rejects_bad_b():
    with pytest.raises(ValueError, match=r"\(k, 2\)"):
        fourier_features_ref(_rand(3, 3), 4, 4)
