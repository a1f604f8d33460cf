"""Posterior sampling with K chains (``reconstruct(samples=K)``, ``metadip.posterior``):
batched chains against separate single-chain fits, the mean / std estimate, errors."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import metadip.api
from metadip.api import reconstruct
from metadip.guide import guide_input
from metadip.inner import prepare
from metadip.loop import fit
from metadip.operators import CompressiveSensing, Denoise
from metadip.posterior import (
    LANGEVIN_SCALE,
    PRIOR_DECAY,
    SampleCollector,
    check_memory,
    tail_length,
)
from tests.conftest import smooth_image, tiny_init
from tests.test_educated import guided_init

F64 = torch.float64
CHAINS = {"langevin": LANGEVIN_SCALE, "prior": PRIOR_DECAY}


def _problem(channels: int = 1, size: int = 16, sigma: float = 0.1):
    x = smooth_image(channels, size, size).to(F64)
    op = Denoise(x.shape, sigma)
    return x, op, op.measure(x, torch.Generator().manual_seed(3))


def _chains_vs_single(init, op, y, k: int, steps: int, guide=None) -> None:
    """K chains in one grouped pass equal K single-chain fits seeded like them."""
    seeds = [7 + i for i in range(k)]
    g = None if guide is None else guide.expand(k, -1, -1, -1)
    params, hyper = prepare(init, op.in_shape, batch=k, seeds=seeds, guide=g, **CHAINS)
    batched = fit(params, y.expand(k, *y.shape), op, hyper, steps)
    for i, s in enumerate(seeds):
        p1, h1 = prepare(init, op.in_shape, seeds=[s], guide=guide, **CHAINS)
        one = fit(p1, y[None], op, h1, steps)
        torch.testing.assert_close(batched.image[i], one.image[0], rtol=1e-10, atol=1e-12)
        assert batched.losses[i] == pytest.approx(one.losses[0], rel=1e-10)
    # The chains differ: each has its own noise.
    assert (batched.image[0] - batched.image[1]).abs().max() > 1e-6


@pytest.mark.parametrize("rule", ["sgd", "adam"])
def test_chains_equal_separate_fits_vanilla_and_meta_rules(rule):
    _, op, y = _problem()
    lr = 0.05 if rule == "sgd" else 0.01
    init = replace(tiny_init(1, steps=6, rule=rule, lr=lr), jitter=1 / 30)
    _chains_vs_single(init, op, y, k=3, steps=6)


def test_chains_equal_separate_fits_with_sure():
    # Educated DIP with SURE: the divergence probe is drawn per chain as well.
    _, op, y = _problem()
    init = replace(guided_init(1, steps=4), loss="sure")
    _chains_vs_single(init, op, y, k=3, steps=4, guide=guide_input(init.config, op, y[None]))


def test_langevin_noise_scales_with_the_step():
    # Without noise or prior the chains of a jitter-free init are identical.
    _, op, y = _problem()
    init = replace(tiny_init(1, steps=3, rule="adam", lr=0.01), jitter=0.0)
    params, hyper = prepare(init, op.in_shape, batch=2, seeds=[0, 1])
    res = fit(params, y.expand(2, *y.shape), op, hyper, 3)
    torch.testing.assert_close(res.image[0], res.image[1], rtol=0, atol=0)
    params, hyper = prepare(init, op.in_shape, batch=2, seeds=[0, 1], **CHAINS)
    res = fit(params, y.expand(2, *y.shape), op, hyper, 3)
    assert (res.image[0] - res.image[1]).abs().max() > 1e-6


def test_reconstruct_mean_and_std_are_over_chains_and_tail_steps():
    x, op, y = _problem(channels=3)
    init = replace(tiny_init(3, steps=20, rule="adam", lr=0.01), jitter=1 / 30, ema=0.0)
    k, steps = 3, 20
    rec = reconstruct(y, op, init=init, steps=steps, samples=k, seed=5, dtype=F64)
    # The same samples by hand: K single chains, their last L iterates.
    samples = []
    for i in range(k):
        params, hyper = prepare(init, op.in_shape, seeds=[5 + i], **CHAINS)
        fit(
            params,
            y[None],
            op,
            hyper,
            steps,
            callback=lambda info: (
                samples.append(info.image()[0]) if info.step >= steps - tail_length(steps) else None
            ),
        )
    stack = torch.stack(samples)
    assert stack.shape[0] == k * tail_length(steps)
    torch.testing.assert_close(rec.image, stack.mean(dim=0), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(rec.std, stack.std(dim=0, correction=0), rtol=1e-6, atol=1e-9)
    assert rec.samples == k and rec.std.shape == rec.image.shape and rec.std.dtype == F64
    assert len(rec.losses) == steps


def test_std_is_zero_for_identical_chains(monkeypatch):
    # No jitter, no Langevin noise, one tail step: every sample is the same image.
    monkeypatch.setattr(metadip.api, "LANGEVIN_SCALE", 0.0)
    _, op, y = _problem()
    init = replace(tiny_init(1, steps=5, rule="adam", lr=0.01), jitter=0.0, ema=0.0)
    rec = reconstruct(y, op, init=init, steps=5, samples=3, dtype=F64)
    assert tail_length(5) == 1
    # Zero up to the rounding of the grouped convolutions (the chains are separate groups).
    assert float(rec.std.abs().max()) < 1e-12


def test_batches_of_problems_get_their_own_chains():
    x = torch.stack([smooth_image(1, 16, 16, seed=s) for s in range(2)]).to(F64)
    ops = [CompressiveSensing((1, 16, 16), 0.5, sigma=0.01, seed=s, dtype=F64) for s in range(2)]
    gen = torch.Generator().manual_seed(0)
    ys = torch.stack([o.measure(xi, gen) for o, xi in zip(ops, x, strict=True)])
    init = replace(tiny_init(1, steps=8, rule="adam", lr=0.01), jitter=1 / 30)
    both = reconstruct(ys, ops, init=init, steps=8, samples=2, dtype=F64, batch_size=1)
    for b in range(2):
        one = reconstruct(ys[b], ops[b], init=init, steps=8, samples=2, dtype=F64)
        torch.testing.assert_close(both.image[b], one.image, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(both.std[b], one.std, rtol=1e-6, atol=1e-9)
    assert both.std.shape == both.image.shape == (2, 1, 16, 16)


def test_collector_falls_back_to_the_final_images():
    collector = SampleCollector(steps=10, samples=2)
    images = torch.arange(2 * 1 * 2 * 2, dtype=F64).view(2, 1, 2, 2)
    mean, std = collector.reduce(images)
    torch.testing.assert_close(mean[0], images.mean(dim=0))
    torch.testing.assert_close(std[0], images.std(dim=0, correction=0))


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "4"])
def test_bad_samples_are_errors(bad):
    _, op, y = _problem()
    with pytest.raises(ValueError, match="samples must be an integer >= 1"):
        reconstruct(y, op, init="random", steps=2, samples=bad)


def test_samples_with_auto_or_a_required_graph_are_errors():
    _, op, y = _problem()
    with pytest.raises(ValueError, match="samples > 1 runs a fixed number of steps"):
        reconstruct(y, op, init="random", steps="auto", samples=2)
    with pytest.raises(RuntimeError, match="chains run eagerly"):
        reconstruct(y, op, init="random", steps=2, samples=2, graph=True)


def test_memory_that_cannot_fit_is_an_error():
    init = tiny_init(3, width=64)
    with pytest.raises(MemoryError, match="chains of a width-64 network at 4096x4096"):
        check_memory(init, (3, 4096, 4096), 10**6)
    check_memory(init, (3, 16, 16), 4)


def test_memory_check_counts_the_chains_of_one_pass(monkeypatch):
    # Memory for exactly B·K networks (one pass) is enough; the check must not ask for more.
    _, op, y = _problem()
    init = replace(tiny_init(1, steps=2, rule="adam", lr=0.01), jitter=1 / 30)
    ys = y.expand(2, *y.shape)
    seen = []
    real = metadip.api.check_memory
    monkeypatch.setattr(
        metadip.api, "check_memory", lambda m, s, n: seen.append(n) or real(m, s, n)
    )
    reconstruct(ys, op, init=init, steps=2, samples=3, dtype=F64)
    reconstruct(ys, op, init=init, steps=2, samples=3, dtype=F64, batch_size=1)
    assert seen == [6, 3]


def test_one_sample_is_todays_fit():
    _, op, y = _problem()
    init = replace(tiny_init(1, steps=5, rule="adam", lr=0.01), jitter=1 / 30)
    a = reconstruct(y, op, init=init, steps=5, dtype=F64)
    b = reconstruct(y, op, init=init, steps=5, dtype=F64, samples=1)
    torch.testing.assert_close(a.image, b.image, rtol=0, atol=0)
    assert b.std is None and b.samples == 1
