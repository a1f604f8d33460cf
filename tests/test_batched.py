"""Batched reconstruction: B problems in one pass equal B separate fits."""

from __future__ import annotations

import math

import pytest
import torch

from metadip import reconstruct
from metadip.operators import (
    CompressiveSensing,
    Denoise,
    LinearOperator,
    PhaseRetrieval,
    Stacked,
)
from tests.conftest import smooth_image, tiny_init

F64 = torch.float64
SHAPE = (3, 9, 11)  # colour, odd sizes


def _measure(op, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.stack([smooth_image(SHAPE[0], *SHAPE[1:], seed=i) for i in range(n)]).to(F64)
    return op.measure(x, g)


def _assert_batched_equals_looped(y, op, init, steps=6, **kw):
    ops = op if isinstance(op, list) else [op] * y.shape[0]
    batched = reconstruct(y, op, init=init, steps=steps, dtype=F64, **kw)
    for i in range(y.shape[0]):
        single = reconstruct(y[i], ops[i], init=init, steps=steps, dtype=F64)
        torch.testing.assert_close(batched.image[i], single.image, rtol=1e-9, atol=1e-11)
        assert batched.losses[i] == pytest.approx(single.losses, rel=1e-9)
    return batched


@pytest.mark.parametrize(
    "make",
    [
        lambda: Denoise(SHAPE, 0.1),
        lambda: CompressiveSensing(SHAPE, 0.5, sigma=0.05, seed=0, dtype=F64),
        lambda: PhaseRetrieval(SHAPE, 0.5, sigma=0.05, seed=0, dtype=F64, channelwise=True),
    ],
    ids=["denoise", "cs", "pr"],
)
def test_shared_operator_meta_rule(make):
    op = make()
    init = tiny_init(3, steps=6, tv_weight=0.02, momentum=0.8, lr=0.3)
    _assert_batched_equals_looped(_measure(op), op, init)


def test_vanilla_dip_with_jitter_and_ema():
    op = Denoise(SHAPE, 0.1)
    init = tiny_init(3, steps=6, rule="adam", lr=0.01)  # with jitter 1/30 and EMA 0.99
    assert init.jitter > 0 and init.ema > 0
    _assert_batched_equals_looped(_measure(op), op, init)


def test_one_operator_per_item_and_passes_of_batch_size():
    ops = [CompressiveSensing(SHAPE, 0.5, sigma=0.05, seed=s, dtype=F64) for s in range(3)]
    y = Stacked(ops).measure(_measure(Denoise(SHAPE, 0.0)), torch.Generator().manual_seed(1))
    init = tiny_init(3, steps=5, lr=0.3)
    whole = _assert_batched_equals_looped(y, ops, init, steps=5)
    passes = reconstruct(y, ops, init=init, steps=5, dtype=F64, batch_size=2)
    torch.testing.assert_close(passes.image, whole.image, rtol=1e-9, atol=1e-11)


def test_siren_batched_equals_looped():
    op = Denoise(SHAPE, 0.1)
    init = tiny_init(3, steps=4, kind="siren", width=8, depth=2, lr=1e-3)
    _assert_batched_equals_looped(_measure(op), op, init, steps=4)


class _Flaky:
    """Identity that returns NaN on chosen calls (counted per object)."""

    def __init__(self, bad_calls):
        self.calls, self.bad = 0, set(bad_calls)

    def __call__(self, x):
        self.calls += 1
        return x * math.nan if self.calls in self.bad else x


def test_a_failing_item_is_restored_alone():
    shape = (1, 8, 8)
    flaky = LinearOperator.from_callables(_Flaky({3}), None, shape, shape)
    ops = [Denoise(shape, 0.0), flaky, Denoise(shape, 0.0)]
    x = torch.stack([smooth_image(1, 8, 8, seed=i) for i in range(3)]).to(F64)
    init = tiny_init(1, steps=6)
    rec = reconstruct(x, ops, init=init, dtype=F64)
    assert rec.restored == [[], [2], []]
    assert math.isnan(rec.losses[1][2]) and torch.isfinite(rec.image).all()
    for i in (0, 2):
        single = reconstruct(x[i], ops[i], init=init, dtype=F64)
        torch.testing.assert_close(rec.image[i], single.image, rtol=1e-9, atol=1e-11)


def test_callback_sees_the_pass_and_every_item():
    op = Denoise(SHAPE, 0.1)
    seen = []
    reconstruct(
        _measure(op),
        op,
        init=tiny_init(3, steps=2),
        dtype=F64,
        batch_size=2,
        callback=lambda info: seen.append((info.first, info.step, len(info.losses))),
    )
    assert seen == [(0, 0, 2), (0, 1, 2), (2, 0, 1), (2, 1, 1)]


def test_bad_batch_arguments_are_clear_errors():
    op = Denoise(SHAPE, 0.1)
    y = _measure(op)
    init = tiny_init(3, steps=1)
    with pytest.raises(ValueError, match="one per item"):
        reconstruct(y[:2], [op] * 3, init=init)
    with pytest.raises(ValueError, match="one per item"):
        reconstruct(y[0], [op] * 3, init=init)
    with pytest.raises(ValueError, match="batch_size"):
        reconstruct(y, op, init=init, batch_size=0)
    with pytest.raises(ValueError, match="must agree"):
        Stacked([op, Denoise((3, 9, 12), 0.1)])


def test_graph_true_on_cpu_says_why():
    op = Denoise(SHAPE, 0.1)
    with pytest.raises(RuntimeError, match="CUDA graphs need a CUDA device"):
        reconstruct(_measure(op)[0], op, init=tiny_init(3, steps=1), graph=True)
