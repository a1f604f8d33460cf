"""Meta-gradients: checkpointed == unrolled, unrolled == finite differences, first order differs."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from metadip import meta, planning
from metadip.init import MetaInit
from metadip.meta import meta_gradient, meta_names, outer_loss
from metadip.tasks import make_operator
from tests.conftest import smooth_image, tiny_init

STEPS = 5
SIZE = 16
F64 = torch.float64


def _init(steps: int = STEPS, seed: int = 0) -> MetaInit:
    """Tiny network with per-step rates that differ per step and tensor, momentum and TV,
    so every meta-parameter has a non-trivial gradient."""
    init = tiny_init(1, steps=steps, width=4, seed=seed)
    g = torch.Generator().manual_seed(seed + 7)
    noise = 0.3 * torch.randn(init.log_lr.shape, generator=g, dtype=F64)
    return replace(
        init,
        log_lr=init.log_lr + noise,
        momentum=torch.tensor(0.8, dtype=F64),
        tv_weight=torch.tensor(0.05, dtype=F64),
    )


def _tasks(kinds: tuple[str, ...] = ("denoise", "cs"), seed: int = 0) -> list:
    x = smooth_image(1, SIZE, SIZE, seed=seed).to(F64)
    out = []
    for i, kind in enumerate(kinds):
        op = make_operator(kind, x.shape, sigma=0.1, ratio=0.5, seed=seed + i).to(dtype=F64)
        y = op.measure(x, torch.Generator().manual_seed(seed + 10 + i))
        out.append((x, op, y))
    return out


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def _assert_close(got: dict, ref: dict, tol: float = 1e-6) -> None:
    """Relative error per meta-parameter below ``tol``. Conv biases that feed an instance
    norm have an exactly-zero true gradient (the norm removes them), so their computed
    value is rounding noise: those are held to ``tol`` relative to the whole gradient."""
    assert set(got) == set(ref)
    total = float(torch.cat([v.flatten() for v in ref.values()]).norm())
    assert total > 0
    for k in ref:
        assert got[k].shape == ref[k].shape, k
        err = float((got[k] - ref[k]).norm())
        scale = max(float(ref[k].norm()), 1e-9 * total)
        assert err <= tol * scale, f"{k}: relative error {err / scale:.2e}"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny problems: threads only add overhead, and on a busy shared CPU oversubscribed
    # OpenMP threads made this module 10-20x slower.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def reference() -> tuple:
    init, tasks = _init(), _tasks()
    loss, grads = meta_gradient(init, tasks, STEPS, mode="unrolled")
    return init, tasks, loss, grads


def test_every_meta_parameter_has_a_gradient(reference):
    init, _, loss, grads = reference
    assert set(grads) == set(meta_names(init))
    assert set(init.tensors()) - set(grads) == {"fourier_basis"}
    for k, g in grads.items():
        assert g.shape == init.tensors()[k].shape, k
        assert torch.isfinite(g).all(), k
    assert loss.dim() == 0 and loss > 0


@pytest.mark.parametrize("segment", [1, 2, 3, 5, 7])
def test_checkpointed_equals_unrolled(reference, segment):
    init, tasks, loss, grads = reference
    got_loss, got = meta_gradient(init, tasks, STEPS, mode="checkpointed", segment=segment)
    assert torch.allclose(got_loss, loss, rtol=1e-12)
    _assert_close(got, grads)


def test_checkpointed_default_segment_longer_horizon():
    # 8 steps -> default segment 3, which does not divide 8.
    init, tasks = _init(steps=8), _tasks(("cs",))
    _, ref = meta_gradient(init, tasks, 8, mode="unrolled")
    _, got = meta_gradient(init, tasks, 8)
    _assert_close(got, ref)


def test_checkpointed_equals_unrolled_l1_phase_retrieval_and_jitter():
    # Jitter draws noise every step: the recomputation must replay the same draws.
    init = replace(_init(steps=4), jitter=0.05)
    tasks = _tasks(("pr",), seed=3)
    _, ref = meta_gradient(init, tasks, 4, mode="unrolled", loss="l1")
    _, got = meta_gradient(init, tasks, 4, mode="checkpointed", segment=3, loss="l1")
    _assert_close(got, ref)


def test_unrolled_matches_finite_differences(reference):
    init, tasks, _, grads = reference
    g = torch.Generator().manual_seed(5)
    direction = {k: torch.randn(v.shape, generator=g, dtype=F64) for k, v in grads.items()}
    analytic = sum(float((grads[k] * direction[k]).sum()) for k in grads)

    def moved(eps: float) -> MetaInit:
        w = {k: v + eps * direction[f"weights.{k}"] for k, v in init.weights.items()}
        kw = {n: getattr(init, n) + eps * direction[n] for n in direction if "." not in n}
        return replace(init, weights=w, **kw)

    # The smoothed TV (eps 1e-6) curves sharply where neighbouring pixels agree, so the
    # difference step must be far below that scale; float64 keeps round-off ~1e-9.
    eps = 1e-7
    fd = float(outer_loss(moved(eps), tasks, STEPS) - outer_loss(moved(-eps), tasks, STEPS))
    fd /= 2 * eps
    assert abs(analytic) > 0
    assert abs(fd - analytic) < 1e-6 * abs(analytic) + 1e-12, (fd, analytic)


@pytest.mark.parametrize("name", ["log_lr", "momentum", "tv_weight", "fourier_scale"])
def test_finite_differences_per_hyper_parameter(reference, name):
    init, tasks, _, grads = reference
    d = torch.randn(grads[name].shape, generator=torch.Generator().manual_seed(9), dtype=F64)
    eps = 1e-7
    up = replace(init, **{name: getattr(init, name) + eps * d})
    down = replace(init, **{name: getattr(init, name) - eps * d})
    fd = float(outer_loss(up, tasks, STEPS) - outer_loss(down, tasks, STEPS)) / (2 * eps)
    analytic = float((grads[name] * d).sum())
    assert abs(fd - analytic) < 1e-5 * abs(analytic) + 1e-12, (name, fd, analytic)


def test_first_order_differs_from_exact(reference):
    init, tasks, loss, grads = reference
    fo_loss, fo = meta_gradient(init, tasks, STEPS, mode="first_order")
    assert torch.allclose(fo_loss, loss, rtol=1e-12)
    assert set(fo) == set(grads)
    total = torch.cat([grads[k].flatten() for k in grads])
    fo_total = torch.cat([fo[k].flatten() for k in grads])
    assert _rel(fo_total, total) > 1e-2
    # The TV weight only acts through the inner gradient, which first order holds constant.
    assert float(fo["tv_weight"]) == 0.0 and float(grads["tv_weight"]) != 0.0


def test_frozen_parameters_are_left_out_and_others_unchanged(reference):
    init, tasks, _, grads = reference
    frozen = ("weights", "tv_weight")
    _, got = meta_gradient(init, tasks, STEPS, mode="checkpointed", segment=2, frozen=frozen)
    assert set(got) == {"log_lr", "momentum", "fourier_scale"}
    _assert_close(got, {k: grads[k] for k in got})
    first = next(iter(init.weights))
    _, one = meta_gradient(init, tasks, STEPS, mode="unrolled", frozen=[f"weights.{first}"])
    assert f"weights.{first}" not in one and len(one) == len(grads) - 1


def test_log_lr_gradient_keeps_the_init_horizon():
    # Training 6 steps from a 4-step init: the extra steps reuse (and train) the last row.
    init, tasks = _init(steps=4), _tasks(("denoise",))
    _, ref = meta_gradient(init, tasks, 6, mode="unrolled", frozen=["weights"])
    _, got = meta_gradient(init, tasks, 6, mode="checkpointed", segment=4, frozen=["weights"])
    assert got["log_lr"].shape == init.log_lr.shape
    _assert_close(got, ref)


def test_bad_arguments_raise_clear_errors():
    init, tasks = _init(), _tasks(("denoise",))
    with pytest.raises(ValueError, match="mode must be one of"):
        meta_gradient(init, tasks, 2, mode="exact")
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        meta_gradient(init, tasks, 0)
    with pytest.raises(ValueError, match="segment must be an integer >= 1"):
        meta_gradient(init, tasks, 2, segment=0)
    with pytest.raises(ValueError, match="loss must be one of"):
        meta_gradient(init, tasks, 2, loss="huber")
    with pytest.raises(ValueError, match="unknown meta-parameter"):
        meta_gradient(init, tasks, 2, frozen=["lr"])
    with pytest.raises(ValueError, match="at least one task"):
        meta_gradient(init, [], 2)
    x, op, y = tasks[0]
    with pytest.raises(ValueError, match=r"x has shape \(16, 16\), expected \(1, 16, 16\)"):
        meta_gradient(init, [(x[0], op, y)], 2)
    with pytest.raises(ValueError, match="y has shape"):
        meta_gradient(init, [(x, op, y[..., :4])], 2)
    with pytest.raises(TypeError, match=r"tuple \(x, op, y\)"):
        meta_gradient(init, [x], 2)
    with pytest.raises(ValueError, match="rule 'sgd'"):
        meta_gradient(replace(init, rule="adam"), tasks, 2)
    with pytest.raises(ValueError, match="ema must be 0"):
        meta_gradient(replace(init, ema=0.9), tasks, 2)


def test_auto_mode_is_exact_and_plans_from_the_memory_available(monkeypatch):
    init, tasks = _init(6), _tasks()
    _, ref = meta_gradient(init, tasks, 6, mode="unrolled")
    _, got = meta_gradient(init, tasks, 6, mode="auto")
    _assert_close(got, ref)
    task = meta._check_tasks(tasks, init)[0]
    per_step = planning.step_graph_bytes(init, task)
    assert per_step > 0
    assert planning.plan(init, task, 6) == ("unrolled", 6)
    # Room for about 5 steps' graph: checkpointed, with segments that fit.
    room = 5 * planning.BACKWARD_FACTOR * per_step / planning.MEMORY_SHARE
    monkeypatch.setattr(planning, "available_memory", lambda device: room)
    assert planning.plan(init, task, 100) == ("checkpointed", 10)
    assert planning.plan(init, task, 9) == ("checkpointed", 5)
    _, tight = meta_gradient(init, tasks, 6, mode="auto")
    _assert_close(tight, ref)


@pytest.mark.parametrize("mode", ["unrolled", "first_order"])
@pytest.mark.parametrize("loss", ["l2", "l1"])
def test_grouped_meta_batch_equals_the_loop(mode, loss):
    # Three CS tasks with their own matrices and measurements, as one grouped pass.
    init, tasks = _init(), _tasks(("cs", "cs", "cs"))
    v_loop, g_loop = meta_gradient(init, tasks, STEPS, mode=mode, loss=loss, grouped=False)
    v_group, g_group = meta_gradient(init, tasks, STEPS, mode=mode, loss=loss, grouped=True)
    assert abs(float(v_group - v_loop)) <= 1e-12 * float(v_loop)
    _assert_close(g_group, g_loop)
    # Tasks of different shapes fall back to the loop.
    mixed = _tasks(("denoise", "cs"))
    _, g_mixed = meta_gradient(init, mixed, STEPS, mode=mode, loss=loss, grouped=True)
    _assert_close(
        g_mixed, meta_gradient(init, mixed, STEPS, mode=mode, loss=loss, grouped=False)[1]
    )
