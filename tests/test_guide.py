"""The TV warm start (``guide="tv"``): it solves the problem it states, in float64 against
the pure-torch TV reference, and feeds Educated DIP's input like the adjoint guide."""

from __future__ import annotations

import pytest
import torch

from metadip.guide import TV_EPS, guide_input, tv_estimate
from metadip.networks import NetConfig
from metadip.operators import CompressiveSensing, Denoise, PhaseRetrieval, Stacked
from metadip.reference import tv_ref

F64 = torch.float64


def _image(seed: int, shape=(3, 10, 12)) -> torch.Tensor:
    """A piecewise-smooth image in (0, 1): blocks plus a little texture."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = shape
    blocks = torch.rand(c, 3, 3, generator=g, dtype=F64)
    big = torch.kron(blocks, torch.ones(1, h // 3 + 1, w // 3 + 1, dtype=F64))[:, :h, :w]
    return (0.1 + 0.7 * big + 0.1 * torch.rand(c, h, w, generator=g, dtype=F64)).clamp(0, 1)


def _objective(op, x, y, lam):
    return 0.5 * (op.forward(x) - y).pow(2).sum() + lam * tv_ref(x, TV_EPS).sum()


def _projected_gradient_residual(op, x, y, lam, step):
    """‖x − clamp(x − s∇f(x))‖: zero exactly at a minimizer over the box [0, 1]."""
    xg = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(_objective(op, xg, y, lam), xg)
    return (x - (x - step * g).clamp(0, 1)).norm().item()


def test_tv_estimate_reaches_the_minimizer_of_the_stated_problem():
    x = _image(0)
    op = CompressiveSensing(x.shape, 0.5, 25 / 255, seed=1).to(F64)
    y = op.measure(x, torch.Generator().manual_seed(2))[None]
    lam = 25 / 255  # weight 1 · σ
    start = op.adjoint(y).clamp(0, 1)
    few = tv_estimate(op, y, iters=20)
    many = tv_estimate(op, y, iters=3000)
    assert many.dtype == F64 and many.shape == (1, *x.shape)
    assert many.min() >= 0 and many.max() <= 1
    assert _objective(op, few, y, lam) < _objective(op, start, y, lam)
    assert _objective(op, many, y, lam) <= _objective(op, few, y, lam)
    # First-order optimality over the box, at the reference TV's gradient.
    assert _projected_gradient_residual(op, many, y, lam, 1e-3) < 1e-7
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


def test_tv_guide_is_refused_for_a_nonlinear_operator():
    op = PhaseRetrieval((3, 8, 8), ratio=0.5, sigma=0.0, seed=0)
    config = NetConfig(input="image", guide="tv")
    with pytest.raises(ValueError, match="not linear"):
        guide_input(config, op, torch.rand(1, *op.out_shape))


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
