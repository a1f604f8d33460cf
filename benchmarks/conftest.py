"""Benchmark helpers: the devices to run on and the environment recorded with each result."""

from __future__ import annotations

import os
import platform
import time

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.provenance import git_commit
from metadip import allocator
from metadip.guide import guide_input
from metadip.inner import init_state, prepare, step
from metadip.operators import PhaseRetrieval

_RATES: dict[str, float] = {}
# The suites time what the metadip command runs: glibc's thresholds raised unless
# METADIP_MALLOC=0 (benchmarks/allocator_ab.py pairs the two settings).
_ALLOCATOR = allocator.tune_allocator()[0] if allocator.wanted() else False


def bench_threads(default: int = 0):
    """An autouse fixture for a benchmark module (``_threads = bench_threads()``): torch's
    thread count from ``METADIP_BENCH_THREADS`` (``default`` when unset; 0 leaves it as
    it is), restored after each test."""
    threads = int(os.environ.get("METADIP_BENCH_THREADS", str(default)))

    @pytest.fixture(autouse=True)
    def _threads():
        before = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        yield
        torch.set_num_threads(before)

    return _threads


def devices() -> list:
    """CPU always; CUDA when present (GPU rows carry the gpu marker)."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out.append(pytest.param("cuda", marks=pytest.mark.gpu))
    return out


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def environment(device: str) -> dict:
    name = torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor()
    return {
        "device": device,
        "device_name": name or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "commit": git_commit(),
        "allocator_tuned": _ALLOCATOR,
        # The machine may be shared: the load average says how much to trust a CPU time.
        "loadavg_1min": os.getloadavg()[0],
    }


def matmul_rate(device: str) -> float:
    """Measured fp32 matmul FLOP/s on ``device`` at the current thread count (best of 5)."""
    key = f"{device}/{torch.get_num_threads()}"
    if key not in _RATES:
        n = 4096 if device == "cuda" else 1024
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        best = float("inf")
        for _ in range(5):
            sync(device)
            t0 = time.perf_counter()
            a @ b
            sync(device)
            best = min(best, time.perf_counter() - t0)
        _RATES[key] = 2 * n**3 / best
    return _RATES[key]


def floor_info(seconds: float, flops: float, device: str) -> dict:
    """A step's time against the compute floor (its FLOPs at the fp32 matmul rate of
    ``device``, measured now): ms, GFLOP, achieved GFLOP/s, matmul GFLOP/s and the ratio."""
    rate = matmul_rate(device)
    return {
        "ms_per_step": 1e3 * seconds,
        "gflop_per_step": flops / 1e9,
        "gflops": flops / seconds / 1e9,
        "matmul_gflops": rate / 1e9,
        "floor_ratio": seconds / (flops / rate),
    }


def step_flops(meta, op, y) -> int:
    """FLOPs of one fitting step for the batch ``y``: B × one problem's (the flop counter
    over-counts the backward of grouped convolutions). The phase-retrieval measurement
    is a custom op the counter cannot see; its two real m×n products per channel are
    added by hand, forward and backward (≈ 3 × 4mn per channel)."""
    guide = guide_input(meta.config, op, y[:1]) if meta.config.guided else None
    params, hyper = prepare(meta, op.in_shape, batch=1, steps=1, guide=guide)
    with FlopCounterMode(display=False) as counter:
        step(params, init_state(params, hyper), y[:1], op, hyper, 0)
    flops = counter.get_total_flops()
    if isinstance(op, PhaseRetrieval):
        m, n = op.a_real.shape[-2:]
        flops += 3 * 4 * m * n * op.in_shape[0]
    return flops * y.shape[0]
