"""The inner step: differentiable through (finite differences), pure, and safe on NaN."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch

from metadip.guide import guide_input
from metadip.inner import init_state, output, prepare, step
from metadip.loop import fit, run_loop
from metadip.operators import CompressiveSensing, Denoise, LinearOperator
from metadip.rules import get_rule
from tests.conftest import smooth_image, tiny_init

F64 = torch.float64


def _unrolled_outer_loss(init, op, y, x, steps, params0):
    """‖f_θT(z) − x‖² after ``steps`` differentiable steps from ``params0``."""
    _, hyper = prepare(init, op.in_shape, steps=steps, create_graph=True)
    params, state = params0, init_state(params0, hyper)
    for t in range(steps):
        params, state, _ = step(params, state, y, op, hyper, t)
    return ((output(params, hyper)[0] - x) ** 2).sum()


# Step sizes small enough that three steps stay where the loss is smooth in θ0
# (large steps cross LeakyReLU kinks, where finite differences stop converging).
@pytest.mark.parametrize("kind, lr", [("denoise", 0.2), ("cs", 0.02)])
def test_gradient_through_steps_matches_finite_differences(kind, lr):
    shape = (1, 9, 10)
    init = tiny_init(1, steps=3, tv_weight=0.05, momentum=0.7, lr=lr)
    init.log_lr[1] += torch.linspace(-0.5, 0.5, init.log_lr.shape[1], dtype=F64)
    x = smooth_image(1, 9, 10).to(F64)
    if kind == "denoise":
        op = Denoise(shape, 0.1)
    else:
        op = CompressiveSensing(shape, 0.5, sigma=0.05, seed=0, dtype=F64)
    y = op.measure(x, torch.Generator().manual_seed(0))[None]

    names = list(init.weights)
    p0 = {k: v.clone().requires_grad_() for k, v in init.weights.items()}
    loss = _unrolled_outer_loss(init, op, y, x, 3, p0)
    grads = torch.autograd.grad(loss, [p0[k] for k in names])

    g = torch.Generator().manual_seed(1)
    direction = {k: torch.randn(v.shape, generator=g, dtype=F64) for k, v in init.weights.items()}
    analytic = sum((gr * direction[k]).sum() for gr, k in zip(grads, names, strict=True))
    h = 1e-7  # small: the loss has LeakyReLU kinks that larger steps would cross
    with torch.no_grad():
        plus = {k: v + h * direction[k] for k, v in init.weights.items()}
        minus = {k: v - h * direction[k] for k, v in init.weights.items()}
    fd = (
        _unrolled_outer_loss(init, op, y, x, 3, plus)
        - _unrolled_outer_loss(init, op, y, x, 3, minus)
    ) / (2 * h)
    assert float(analytic.detach()) == pytest.approx(float(fd.detach()), rel=1e-5)


def test_step_is_pure():
    init = tiny_init(1, steps=2)
    op = Denoise((1, 8, 8), 0.1)
    y = op.measure(smooth_image(1, 8, 8).to(F64))[None]
    params, hyper = prepare(init, op.in_shape)
    before = {k: v.clone() for k, v in params.items()}
    state = init_state(params, hyper)
    a = step(params, state, y, op, hyper, 0)
    b = step(params, state, y, op, hyper, 0)
    assert all(torch.equal(params[k], before[k]) for k in params)
    assert all(torch.equal(a[0][k], b[0][k]) for k in params)
    assert torch.equal(a[2], b[2])
    assert not any(v.requires_grad for v in a[0].values())
    # Conv biases in front of a normalization get zero gradient; the rest must move.
    moved = [not torch.equal(a[0][k], before[k]) for k in params]
    assert sum(moved) > len(moved) // 2


def test_sgd_update_rule_is_momentum_sgd():
    init = tiny_init(1, steps=2, momentum=0.5, lr=0.1)
    op = Denoise((1, 8, 8), 0.1)
    y = op.measure(smooth_image(1, 8, 8).to(F64))[None]
    params, hyper = prepare(init, op.in_shape)
    s0 = init_state(params, hyper)
    p1, s1, _ = step(params, s0, y, op, hyper, 0)
    p2, _, _ = step(p1, s1, y, op, hyper, 1)
    k = next(iter(params))
    g1 = (params[k] - p1[k]) / 0.1
    with torch.enable_grad():
        q = {n: v.detach().requires_grad_() for n, v in p1.items()}
        from metadip.inner import data_loss

        loss = data_loss(output(q, hyper), y, op, hyper)
        (g2,) = torch.autograd.grad(loss, [q[k]])
    torch.testing.assert_close(p2[k], p1[k] - 0.1 * (0.5 * g1 + g2))


class _Flaky:
    """Identity operator that returns NaN on chosen calls (a numerical blow-up)."""

    def __init__(self, shape, bad_calls):
        self.in_shape = self.out_shape = shape
        self.calls = 0
        self.bad = set(bad_calls)

    def forward(self, x):
        self.calls += 1
        return x * math.nan if self.calls in self.bad else x


def test_non_finite_loss_restores_and_halves_step():
    init = tiny_init(1, steps=6)
    x = smooth_image(1, 8, 8).to(F64)
    flaky = _Flaky((1, 8, 8), bad_calls={3})
    op = LinearOperator.from_callables(flaky.forward, None, (1, 8, 8), (1, 8, 8))
    params, hyper = prepare(init, op.in_shape)
    res = fit(params, x[None], op, hyper, 6)
    assert res.restored == [[2]]
    assert math.isnan(res.losses[0][2]) and all(
        math.isfinite(v) for i, v in enumerate(res.losses[0]) if i != 2
    )
    assert torch.isfinite(res.image).all()


@pytest.mark.parametrize("bad_calls", [set(), {3}, {3, 4, 9}])
def test_host_checked_restores_equal_the_device_selects(bad_calls):
    # On a CPU a step every problem accepts skips the torch.where selects; the trace must be
    # that of the device path, with and without restores.
    init = tiny_init(1, steps=8, rule="adam", lr=0.05)
    x = smooth_image(1, 8, 8).to(F64)
    traces = []
    for host in (True, False):
        flaky = _Flaky((1, 8, 8), bad_calls=bad_calls)
        op = LinearOperator.from_callables(flaky.forward, None, (1, 8, 8), (1, 8, 8))
        params, hyper = prepare(init, op.in_shape)
        traces.append(run_loop(params, x[None], op, hyper, 8, host_checks=host))
    a, b = traces
    assert torch.equal(a.bad, b.bad) and bool(a.bad.any()) == bool(bad_calls)
    torch.testing.assert_close(a.losses, b.losses, rtol=0, atol=0, equal_nan=True)
    for ours, theirs in ((a.params, b.params), (a.good_params, b.good_params)):
        for k in ours:
            assert torch.equal(ours[k], theirs[k]), k
    for slot in ("m", "v"):
        for k in a.state[slot]:
            assert torch.equal(a.state[slot][k], b.state[slot][k]), (slot, k)
    assert torch.equal(torch.as_tensor(a.hyper.lr_scale), torch.as_tensor(b.hyper.lr_scale))


@pytest.mark.parametrize("lr", [0.01, 1.0])
def test_sure_fit_leaves_an_identity_start_but_not_for_a_blow_up(lr):
    # A residual Educated-DIP network starts as the identity (zero output layer): data fit
    # 0. SURE moves it away from y, toward σ² per pixel: that rise must not be undone as a
    # loss jump, but a rise far past σ² (a step of 1.0) still is.
    net = {"input": "image", "residual": True, "norm": "none", "noise_channels": 0}
    init = tiny_init(1, steps=10, rule="adam", lr=lr, network=net)
    init = dataclasses.replace(init, loss="sure", jitter=0.0, ema=0.0)  # as the shipped file
    op = Denoise((1, 16, 16), 0.1)
    x = smooth_image(1, 16, 16).to(F64)
    y = op.measure(x, torch.Generator().manual_seed(0))[None]
    params, hyper = prepare(init, op.in_shape, guide=guide_input(init.config, op, y))
    assert float(output(params, hyper).sub(y).abs().max()) == 0.0
    res = fit(params, y, op, hyper, 10)
    if lr < 0.1:
        assert res.restored == [[]]
        assert float((res.image - y).abs().max()) > 1e-3
    else:
        assert res.restored[0]
        assert float((res.image - x).pow(2).mean()) < 10 * 0.1**2


def test_fit_lowers_the_loss_with_adam():
    init = tiny_init(1, steps=30, rule="adam", lr=0.01)
    op = Denoise((1, 16, 16), 0.1)
    y = op.measure(smooth_image(1, 16, 16).to(F64), torch.Generator().manual_seed(0))[None]
    params, hyper = prepare(init, op.in_shape)
    res = fit(params, y, op, hyper, 30)
    assert res.losses[0][-1] < 0.5 * res.losses[0][0]
    assert res.image.shape == (1, 1, 16, 16)


def test_channel_mismatch_is_an_error():
    with pytest.raises(ValueError, match="1-channel images but the operator expects 3"):
        prepare(tiny_init(1), (3, 8, 8))


def test_colour_init_fits_gray_images_through_the_channel_mean():
    init = tiny_init(3)
    params, hyper = prepare(init, (1, 16, 16))
    _, colour = prepare(init, (3, 16, 16))
    gray = output(params, hyper)
    assert gray.shape == (1, 1, 16, 16)
    torch.testing.assert_close(gray, output(params, colour).mean(dim=1, keepdim=True))


@pytest.mark.parametrize("rule", ["sgd", "adam"])
def test_update_rules_match_torch_optim_in_float64(rule):
    """The rule transforms against torch.optim on the same gradient sequence."""
    gen = torch.Generator().manual_seed(0)
    p0 = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    grads = [torch.randn(5, 3, generator=gen, dtype=torch.float64) for _ in range(6)]
    hyper = SimpleNamespace(momentum=0.8, betas=(0.9, 0.99), adam_eps=1e-8)
    transform = get_rule(rule)
    p, slots = p0.clone(), {k: v["w"] for k, v in transform.init({"w": p0}).items()}
    ref = p0.clone().requires_grad_()
    if rule == "sgd":
        opt = torch.optim.SGD([ref], lr=0.1, momentum=0.8, dampening=0)
    else:
        opt = torch.optim.Adam([ref], lr=0.1, betas=(0.9, 0.99), eps=1e-8)
    for t, g in enumerate(grads):
        p, slots = transform.update(p, g, slots, 0.1, t, hyper)
        ref.grad = g.clone()
        opt.step()
        torch.testing.assert_close(p, ref.detach(), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="unknown update rule 'lbfgs'; choose from sgd, adam"):
        get_rule("lbfgs")
