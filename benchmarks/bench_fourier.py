"""Fourier features forward+backward per backend: 16 frequencies on a 128x128 grid.

pytest benchmarks/bench_fourier.py --benchmark-json=benchmarks/results/<date>-<device>-fourier.json
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.conftest import sync
from benchmarks.kernel_bench import backend_cases, info, require, run
from metadip import dispatch


@pytest.mark.parametrize(("device", "backend"), backend_cases())
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
def test_fourier(benchmark, device, backend, mode):
    require(device, backend)
    k, h, w = 16, 128, 128
    b = (4 * torch.randn(k, 2, device=device)).requires_grad_(mode != "fwd")
    g = torch.randn(2 * k, h, w, device=device)
    benchmark.group = f"fourier-{mode}"
    benchmark.extra_info.update(info(device, backend, shape=[k, h, w], dtype="float32"))

    def once():
        out = dispatch.fourier_features(b, h, w, backend=backend)
        if mode != "fwd":
            (out * g).sum().backward()
        sync(device)

    nbytes = 2 * k * h * w * 4 * (1 if mode == "fwd" else 3)
    run(benchmark, once, device, nbytes, rounds=30)
