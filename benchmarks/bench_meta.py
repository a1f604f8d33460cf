"""One meta-gradient (one task, T inner steps) of the shipped default's network at 128×128.

    METADIP_BENCH_THREADS=1 pytest benchmarks/bench_meta.py \\
        --benchmark-json=benchmarks/results/<date>-cpu-meta.json

Modes: ``checkpointed`` (⌈√T⌉-step segments, the training default until ``auto``) and
``auto`` (unrolled when the measured graph fits, which skips the checkpointed forward).
``extra_info``: seconds per meta-gradient, the same over the seconds of T plain fitting
steps measured in the same process (the cost of differentiating through the loop), the
FLOPs of T steps over the matmul rate, thread count, commit and load average.
"""

from __future__ import annotations

import resource
import time

import pytest
import torch

from benchmarks.conftest import bench_threads, environment, matmul_rate, step_flops
from metadip.inner import init_state, prepare, step
from metadip.meta import meta_gradient
from metadip.operators import Denoise
from metadip.planning import plan
from metadip.shipped import load_init

SIZE = 128


_threads = bench_threads(1)


def _task():
    x = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    op = Denoise(x.shape, 25 / 255)
    return x, op, op.measure(x, torch.Generator().manual_seed(1))


def _forward_seconds(init, task, steps: int) -> float:
    """Seconds of ``steps`` plain fitting steps (no meta-graph), best of 2."""
    x, op, y = task
    best = float("inf")
    for _ in range(2):
        params, hyper = prepare(init, op.in_shape, steps=steps)
        state = init_state(params, hyper)
        t0 = time.perf_counter()
        for t in range(steps):
            params, state, _ = step(params, state, y[None], op, hyper, t)
        best = min(best, time.perf_counter() - t0)
    return best


@pytest.mark.parametrize("mode", ["checkpointed", "auto"])
@pytest.mark.parametrize("steps", [20])
def test_meta_gradient(benchmark, steps, mode):
    init = load_init("default")
    task = _task()
    run = lambda: meta_gradient(init, [task], steps, mode=mode)  # noqa: E731
    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    seconds = benchmark.stats.stats.median
    forward = _forward_seconds(init, task, steps)
    flops = step_flops(init, task[1], task[2][None]) * steps
    chosen = plan(init, task, steps) if mode == "auto" else ("checkpointed", None)
    benchmark.group = f"meta-gradient-{SIZE}-T{steps}"
    benchmark.extra_info.update(
        environment("cpu"),
        steps=steps,
        mode=mode,
        planned=list(chosen),
        seconds=seconds,
        forward_seconds=forward,
        ratio_to_forward=seconds / forward,
        step_floor_seconds=flops / matmul_rate("cpu"),
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
