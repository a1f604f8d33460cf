"""The TV warm start (``guide="tv"``): its TV prox is certified by a duality gap, the estimate
is a fixed point of the prox-gradient map, both in float64 against the pure-torch TV
reference, and it feeds Educated DIP's input like the adjoint guide."""

from __future__ import annotations

import pytest
import torch

from metadip.guide import _grad_adjoint, guide_input, tv_estimate, tv_prox
from metadip.netconfig import NetConfig
from metadip.operators import (
    Blur,
    CompressiveSensing,
    Denoise,
    Operator,
    PhaseRetrieval,
    Stacked,
    SuperResolution,
    gram_norm,
)
from metadip.reference import tv_ref

F64 = torch.float64


def _image(seed: int, shape=(3, 10, 12)) -> torch.Tensor:
    """A piecewise-smooth image in (0, 1): blocks plus a little texture."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = shape
    blocks = torch.rand(c, 3, 3, generator=g, dtype=F64)
    big = torch.kron(blocks, torch.ones(1, h // 3 + 1, w // 3 + 1, dtype=F64))[:, :h, :w]
    return (0.1 + 0.7 * big + 0.1 * torch.rand(c, h, w, generator=g, dtype=F64)).clamp(0, 1)


def _tv(x):
    """Unsmoothed isotropic TV per image, by the reference (eps adds 1e-15 per pixel)."""
    return tv_ref(x, 1e-30)


def _objective(op, x, y, lam):
    return 0.5 * (op.forward(x) - y).pow(2).sum() + lam * _tv(x).sum()


def _prox_gradient_residual(op, x, y, lam):
    """‖x − prox_{sλTV+box}(x − s∇f(x))‖ with a prox solved to its duality gap: zero
    exactly at a stationary point of ``½‖F(x) − y‖² + λTV(x)`` over the box."""
    step = 0.1 / gram_norm(op, x, 100)
    xg = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(0.5 * (op.forward(xg) - y).pow(2).sum(), xg)
    moved, _ = tv_prox(x - step * g, step * lam, 5000)
    return (x - moved).norm().item()


def _duality_gap(b, mu, x, dual):
    """P(x) − D(w) for ``min_{x∈[0,1]} ½‖x − b‖² + μ TV(x)``: with v = b − μ∇ᵀw,
    ``D(w) = ½‖b‖² − ½‖v‖² + ½‖v − clamp(v)‖²`` bounds P from below for any ``|w| ≤ 1``
    (weak duality), so a small gap certifies x without trusting the solver."""
    v = b - mu * _grad_adjoint(*dual)
    primal = 0.5 * (x - b).pow(2).sum() + (mu.flatten() * _tv(x)).sum()
    lower = 0.5 * b.pow(2).sum() - 0.5 * v.pow(2).sum() + 0.5 * (v - v.clamp(0, 1)).pow(2).sum()
    return (primal - lower).item()


@pytest.mark.parametrize("spread", [0.2, 2.0])  # box inactive / widely active
def test_tv_prox_is_certified_by_its_duality_gap(spread):
    g = torch.Generator().manual_seed(1)
    b = 0.5 + spread * (torch.rand(2, 3, 9, 11, generator=g, dtype=F64) - 0.5)
    mu = torch.tensor([0.05, 0.2], dtype=F64).view(2, 1, 1, 1)
    x, dual = tv_prox(b, mu, 10000)  # the primal gap closes as 1/k: measured 4e-9
    assert x.min() >= 0 and x.max() <= 1
    assert (dual[0].pow(2) + dual[1].pow(2)).max() <= 1 + 1e-12
    assert -1e-12 < _duality_gap(b, mu, x, dual) < 1e-8
    few, few_dual = tv_prox(b, mu, 5)
    assert _duality_gap(b, mu, few, few_dual) > 1e-6  # the certificate can fail
    # Warm-starting from a converged dual stays converged.
    again, _ = tv_prox(b, mu, 1, dual)
    torch.testing.assert_close(again, x, rtol=0, atol=1e-6)


def test_tv_estimate_reaches_the_minimizer_of_the_stated_problem():
    x = _image(0)
    op = CompressiveSensing(x.shape, 0.5, 25 / 255, seed=1).to(F64)
    y = op.measure(x, torch.Generator().manual_seed(2))[None]
    lam = 25 / 255  # weight 1 · σ
    start = op.adjoint(y).clamp(0, 1)
    few = tv_estimate(op, y, iters=10)
    many = tv_estimate(op, y, iters=2000)
    assert many.dtype == F64 and many.shape == (1, *x.shape)
    assert many.min() >= 0 and many.max() <= 1
    assert _objective(op, few, y, lam) < _objective(op, start, y, lam)
    assert _objective(op, many, y, lam) <= _objective(op, few, y, lam)
    # First-order optimality over the box (a convex problem: the minimizer).
    assert _prox_gradient_residual(op, many, y, lam) < 1e-7
    assert _prox_gradient_residual(op, few, y, lam) > 1e-4
    # And it is the better image: TV removes much of the noise the data term lets through.
    assert (many[0] - x).norm() < 0.3 * (start[0] - x).norm()


def test_without_a_prior_the_denoising_estimate_is_the_clamped_measurement():
    x = _image(3)
    op = Denoise(x.shape, 0.3).to(F64)
    y = op.measure(x, torch.Generator().manual_seed(4))[None]
    assert (y < 0).any() and (y > 1).any()
    got = tv_estimate(op, y, weight=0.0, iters=200)
    torch.testing.assert_close(got, y.clamp(0, 1), rtol=0, atol=1e-10)


def test_each_problem_of_a_batch_gets_its_own_noise_level():
    x = _image(5)
    ops = [CompressiveSensing(x.shape, 0.5, s, seed=6).to(F64) for s in (5 / 255, 50 / 255)]
    ys = torch.stack([o.measure(x, torch.Generator().manual_seed(7)) for o in ops])
    both = tv_estimate(Stacked(ops), ys, iters=50)
    for i, o in enumerate(ops):
        alone = tv_estimate(o, ys[i : i + 1], iters=50)
        torch.testing.assert_close(both[i : i + 1], alone, rtol=0, atol=1e-12)


def test_tv_guide_feeds_the_network_input_with_its_noise_level():
    x = _image(8)
    op = CompressiveSensing(x.shape, 0.5, 25 / 255, seed=9).to(F64)
    y = op.measure(x, torch.Generator().manual_seed(10))[None]
    config = NetConfig(input="image", guide="tv", guide_iters=30, noise_level=True)
    g = guide_input(config, op, y)
    assert g.shape == (1, config.guide_channels, *x.shape[1:])
    torch.testing.assert_close(g[:, :3], tv_estimate(op, y, iters=30))
    torch.testing.assert_close(g[:, 3], torch.full_like(g[:, 3], 25 / 255))


def test_phase_retrieval_estimate_is_tv_amplitude_flow_from_a_constant():
    x = _image(11)
    op = PhaseRetrieval(x.shape, 1.0, 5 / 255, seed=12, channelwise=True).to(F64)
    y = op.measure(x, torch.Generator().manual_seed(13))[None]
    lam = 5 / 255
    start = op.estimate_start(y)
    assert (start == start[:, :, :1, :1]).all()  # one constant per channel
    many = tv_estimate(op, y, iters=2000)
    assert many.min() >= 0 and many.max() <= 1
    assert _objective(op, many, y, lam) < _objective(op, start, y, lam)
    # A stationary point of the non-convex problem over the box ...
    assert _prox_gradient_residual(op, many, y, lam) < 1e-7
    # ... that is the image, not a phase-retrieval ghost: its error is far below the start's.
    assert (many[0] - x).norm() < 0.3 * (start[0] - x).norm()


def test_phase_retrieval_start_matches_the_measured_energy_per_channel():
    x = _image(14)
    op = PhaseRetrieval(x.shape, 0.5, 0.0, seed=15, channelwise=True).to(F64)
    y = op.forward(x)[None]
    start = op.estimate_start(y)
    torch.testing.assert_close(op.forward(start).pow(2).sum(-1), y.pow(2).sum(-1))
    # The noise's expected energy mσ² is taken out: a pure-noise measurement starts black.
    noisy = PhaseRetrieval(x.shape, 0.5, 0.5, seed=15, channelwise=True).to(F64)
    assert noisy.estimate_start(torch.zeros(1, *noisy.out_shape, dtype=F64)).abs().max() == 0
    both = Stacked([op, op]).estimate_start(torch.cat([y, 2 * y]))
    torch.testing.assert_close(both, torch.cat([start, (2 * start).clamp(0, 1)]))


def test_a_nonlinear_operator_takes_the_tv_guide_only():
    op = PhaseRetrieval((3, 8, 8), ratio=0.5, sigma=0.1, seed=0)
    y = op.measure(torch.rand(1, 3, 8, 8))
    tv_guide = NetConfig(input="image", guide="tv", guide_iters=5, noise_level=True)
    assert guide_input(tv_guide, op, y).shape == (1, 4, 8, 8)
    for config in (
        NetConfig(input="image"),  # the adjoint guide Aᵀy
        NetConfig(input="image", guide="tv", coverage=True),  # coverage is Aᵀ A 1
    ):
        with pytest.raises(ValueError, match="not linear"):
            guide_input(config, op, y)
    square = _Square((3, 8, 8))  # non-linear, with no start estimate of its own
    assert op.has_start and not square.has_start
    with pytest.raises(NotImplementedError, match="no start estimate"):
        square.estimate_start(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="not linear"):
        guide_input(tv_guide, square, torch.rand(1, 3, 8, 8))


class _Square(Operator):
    def __init__(self, shape):
        super().__init__(shape, shape)

    def _forward(self, x):
        return x * x


def test_config_validates_the_guide():
    with pytest.raises(ValueError, match="guide must be one of"):
        NetConfig(input="image", guide="bm3d")
    with pytest.raises(ValueError, match="needs input='image'"):
        NetConfig(guide="tv")
    with pytest.raises(ValueError, match="guide_iters must be >= 1"):
        NetConfig(input="image", guide="tv", guide_iters=0)
    with pytest.raises(ValueError, match="guide_weight >= 0"):
        NetConfig(input="image", guide="tv", guide_weight=-1.0)
    config = NetConfig(input="image", guide="tv", guide_iters=7, guide_weight=0.5)
    assert NetConfig.from_dict(config.to_dict()) == config


def test_a_linear_start_is_the_pseudo_inverse_where_there_is_one():
    x = _image(16, (3, 12, 16))
    sr = SuperResolution(x.shape, 4, 0.0).to(F64)
    y = sr.forward(x)[None]
    # Aᵀy is a sixteenth of the image's brightness; A⁺y (block replication) keeps it.
    torch.testing.assert_close(sr.estimate_start(y), sr.A_dagger(y).clamp(0, 1))
    assert sr.estimate_start(y).mean() == pytest.approx(float(x.mean()), rel=1e-9)
    # Without a pseudo-inverse the start stays the clamped adjoint.
    blur = Blur(x.shape, kernel_size=5, kernel_sigma=1.0).to(F64)
    yb = blur.forward(x)[None]
    torch.testing.assert_close(blur.estimate_start(yb), blur.adjoint(yb).clamp(0, 1))
