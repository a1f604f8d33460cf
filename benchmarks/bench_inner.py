"""One fitting step at 128×128 against the compute floor.

    METADIP_BENCH_THREADS=2 pytest benchmarks/bench_inner.py \\
        --benchmark-json=benchmarks/results/<date>-cpu-inner.json

Networks: the shipped default's (noise input, instance norm, width 32, depth 4) and an
Educated-DIP one of the same size (image input, residual, no normalization); rules: the
momentum-SGD meta-rule and Adam. ``extra_info``: ms per step, GFLOP per step (counted
with ``torch.utils.flop_counter``), the fp32 matmul rate measured in the same process,
the achieved GFLOP/s and the ratio to the floor (FLOPs / matmul rate), with the thread
count, commit and load average.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.conftest import bench_threads, devices, environment, floor_info, step_flops, sync
from metadip.guide import guide_input
from metadip.init import MetaInit
from metadip.inner import init_state, prepare, step
from metadip.operators import Denoise

SIZE = 128
EDUCATED = {"input": "image", "residual": True, "norm": "none", "noise_channels": 0}
NETWORKS = {
    "dip": {},
    "educated": {"num_fourier": 0, "network": {**EDUCATED, "noise_level": True}},
}


_threads = bench_threads()


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("rule", ["sgd", "adam"])
@pytest.mark.parametrize("network", list(NETWORKS))
def test_inner_step(benchmark, network, rule, device):
    init = MetaInit.random(3, width=32, depth=4, steps=1, rule=rule, **NETWORKS[network])
    init = init.to(device)
    op = Denoise((3, SIZE, SIZE), 25 / 255)
    y = torch.rand(1, 3, SIZE, SIZE, device=device)
    guide = guide_input(init.config, op, y) if init.config.guided else None
    params, hyper = prepare(init, op.in_shape, guide=guide)
    state = init_state(params, hyper)

    def one_step():
        out = step(params, state, y, op, hyper, 0)
        sync(device)
        return out

    one_step()
    benchmark.pedantic(one_step, rounds=20, iterations=1, warmup_rounds=3)
    seconds = benchmark.stats.stats.median
    flops = step_flops(init, op, y)
    benchmark.group = f"inner-step-{SIZE}"
    benchmark.extra_info.update(
        environment(device),
        shape=[3, SIZE, SIZE],
        rule=rule,
        network=f"{network} skip 4x32",
        **floor_info(seconds, flops, device),
    )
