"""Gaussian measurements forward+backward per backend at paper sizes.

n = 128·128 per channel, 3 channels as the batch, m/n = 1/4 and 1/8; phase
retrieval (complex, |Ax|) with A stored (dense) or generated in-kernel
(seeded), and compressive sensing (real, Ax) stored and seeded. On the CPU the C++
backend streams a stored A once for these 3 vectors, where the torch backend is ATen's
GEMM.

pytest benchmarks/bench_cmeasure.py \
    --benchmark-json=benchmarks/results/<date>-<device>-cmeasure.json
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.conftest import sync
from benchmarks.kernel_bench import backend_cases, info, require, run
from metadip import dispatch

N = 128 * 128
BATCH = 3
RATIOS = {"1/4": 4, "1/8": 8}


@pytest.mark.parametrize(("device", "backend"), backend_cases())
@pytest.mark.parametrize("ratio", list(RATIOS))
def test_phase_retrieval_dense(benchmark, device, backend, ratio):
    require(device, backend)
    m = N // RATIOS[ratio]
    ar, ai = dispatch.seeded_gaussian(
        0, m, N, device=device, backend="torch" if device == "cpu" else None
    )
    x = torch.rand(BATCH, N, device=device, requires_grad=True)
    benchmark.group = f"cmeasure-complex-dense-{ratio}"
    benchmark.extra_info.update(
        info(device, backend, shape=[BATCH, m, N], dtype="float32", storage="dense")
    )

    def once():
        dispatch.complex_measure(x, ar, ai, backend=backend).sum().backward()
        sync(device)

    # A is read twice (forward and backward), both planes, float32.
    run(benchmark, once, device, 2 * 2 * m * N * 4, rounds=10)


@pytest.mark.parametrize(("device", "backend"), backend_cases())
@pytest.mark.parametrize("ratio", list(RATIOS))
@pytest.mark.parametrize("cplx", [True, False], ids=["complex", "real"])
def test_seeded(benchmark, device, backend, ratio, cplx):
    require(device, backend)
    # The torch reference materializes A with numpy Philox on the host: minutes per round
    # at 1/4, and on a GPU it would time the host, not the device.
    if backend == "torch" and (device != "cpu" or ratio == "1/4"):
        pytest.skip("the torch reference materializes A on the host with numpy Philox")
    m = N // RATIOS[ratio]
    x = torch.rand(BATCH, N, device=device, requires_grad=True)
    benchmark.group = f"cmeasure-{'complex' if cplx else 'real'}-seeded-{ratio}"
    benchmark.extra_info.update(
        info(device, backend, shape=[BATCH, m, N], dtype="float32", storage="seeded")
    )

    def once():
        dispatch.seeded_measure(x, 0, m, complex=cplx, backend=backend).sum().backward()
        sync(device)

    # Seeded mode moves only x, y and gradients; bytes are reported for completeness.
    run(benchmark, once, device, 4 * BATCH * (2 * N + 2 * m), rounds=3)


@pytest.mark.parametrize(("device", "backend"), backend_cases())
@pytest.mark.parametrize("ratio", list(RATIOS))
def test_compressive_sensing_dense(benchmark, device, backend, ratio):
    """Stored real A: A x and its backward, also the baseline seeded real mode trades against."""
    require(device, backend)
    m = N // RATIOS[ratio]
    a = torch.randn(m, N, device=device) / m**0.5
    x = torch.rand(BATCH, N, device=device, requires_grad=True)
    benchmark.group = f"cmeasure-real-dense-{ratio}"
    benchmark.extra_info.update(
        info(device, backend, shape=[BATCH, m, N], dtype="float32", storage="dense")
    )

    def once():
        dispatch.dense_measure(x, a, backend=backend).sum().backward()
        sync(device)

    # A is read twice (forward and backward), float32.
    run(benchmark, once, device, 2 * m * N * 4, rounds=10)
