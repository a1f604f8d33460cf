"""TV forward+backward per backend at paper size (128x128x3).

pytest benchmarks/bench_tv.py --benchmark-json=benchmarks/results/<date>-<device>-tv.json
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.conftest import sync
from benchmarks.kernel_bench import backend_cases, info, require, run
from metadip import dispatch


@pytest.mark.parametrize(("device", "backend"), backend_cases())
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
def test_tv(benchmark, device, backend, batch, mode):
    require(device, backend)
    shape = (batch, 3, 128, 128)
    x = torch.rand(shape, device=device, requires_grad=mode != "fwd")
    benchmark.group = f"tv-{mode}-B{batch}"
    benchmark.extra_info.update(info(device, backend, shape=list(shape), dtype="float32"))

    def once():
        val = dispatch.tv(x, 1e-6, backend=backend)
        if mode != "fwd":
            val.sum().backward()
        sync(device)

    # Ideal traffic: forward reads x, writes the saved gradient; backward reads it, writes x.grad.
    nbytes = x.numel() * 4 * (1 if mode == "fwd" else 4)
    run(benchmark, once, device, nbytes, rounds=50)
