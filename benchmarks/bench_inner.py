"""ms per inner step of the default network (the baseline later kernels and graphs beat).

pytest benchmarks/bench_inner.py --benchmark-json=benchmarks/results/inner-cpu.json
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.conftest import devices, environment, sync
from metadip.init import MetaInit
from metadip.inner import init_state, prepare, step
from metadip.operators import Denoise


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("rule", ["sgd", "adam"])
@pytest.mark.parametrize("size", [64, 128])
def test_inner_step(benchmark, size, rule, device):
    init = MetaInit.random(3, steps=1, rule=rule).to(device)
    op = Denoise((3, size, size), 25 / 255)
    y = torch.rand(1, 3, size, size, device=device)
    params, hyper = prepare(init, op.in_shape)
    state = init_state(params, hyper)
    benchmark.group = f"inner-step-{size}"
    benchmark.extra_info.update(
        environment(device), shape=[3, size, size], rule=rule, network="skip 5x128 (default)"
    )

    def one_step():
        out = step(params, state, y, op, hyper, 0)
        sync(device)
        return out

    one_step()
    benchmark.pedantic(one_step, rounds=10, iterations=1, warmup_rounds=2)
