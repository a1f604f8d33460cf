"""Shared pieces of bench_tv.py, bench_cmeasure.py and bench_fourier.py.

Every case times forward+backward of one backend; the torch reference is one of
the backends, so each group compares fused kernels with it directly. extra_info
carries device, shape, dtype, versions, bytes moved, achieved GB/s and its
fraction of the device's measured copy bandwidth.
"""

from __future__ import annotations

import functools
import os
import time

import pytest
import torch

from benchmarks.conftest import environment, sync
from metadip import dispatch


def backend_cases() -> list:
    """(device, backend) pairs; Triton only on CUDA (its CPU interpreter is not worth timing)."""
    cases = [pytest.param("cpu", b, id=f"cpu-{b}") for b in ("torch", "cpp")]
    if torch.cuda.is_available():
        cases += [
            pytest.param("cuda", b, id=f"cuda-{b}", marks=pytest.mark.gpu)
            for b in ("torch", "cpp", "triton")
        ]
    return cases


def require(device: str, backend: str) -> None:
    why = dispatch.unavailable_reason(backend, device)
    if why:
        pytest.skip(f"{backend} on {device}: {why}")


@functools.cache
def copy_bandwidth(device: str) -> float:
    """Measured device copy bandwidth in GB/s (read + write of a 256 MiB buffer)."""
    src = torch.empty(64 * 2**20, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    dst.copy_(src)
    sync(device)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        dst.copy_(src)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.numel() * src.element_size() / best / 1e9


def info(device: str, backend: str, **extra) -> dict:
    out = environment(device)
    try:
        import triton

        out["triton"] = triton.__version__
    except ImportError:
        out["triton"] = None
    # Load average: other processes on a shared CPU distort OpenMP timings, so record it.
    out.update(
        backend=backend,
        copy_GBps=round(copy_bandwidth(device), 2),
        load_avg_1m=round(os.getloadavg()[0], 2),
        **extra,
    )
    return out


def run(benchmark, fn, device: str, nbytes: int, rounds: int, **extra) -> None:
    """Times fn (which must synchronize), then records achieved bandwidth."""
    fn()  # warm-up: compile / probe / allocate outside the timing
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
    mean = benchmark.stats.stats.mean
    gbps = nbytes / mean / 1e9
    benchmark.extra_info.update(
        bytes=nbytes,
        GBps=round(gbps, 3),
        fraction_of_copy_bw=round(gbps / copy_bandwidth(device), 4),
        **extra,
    )


def summarize(path: str) -> str:
    """Markdown table: min / median / mean ms and torch's min over this min.

    The minimum is the statistic least distorted by other load on a shared CPU.
    """
    import json
    from pathlib import Path

    data = json.loads(Path(path).read_text())
    rows: dict[str, dict[str, dict]] = {}
    for bench in data["benchmarks"]:
        e = bench["extra_info"]
        key = f"{e['backend']} ({e['storage']})" if "storage" in e else e["backend"]
        rows.setdefault(bench["group"], {})[key] = {**bench["stats"], **e}
    commit = data.get("commit_info", {})
    lines = [
        f"CPU kernel benchmarks, {data['datetime'][:16]} UTC, commit {commit.get('id', '?')[:10]}"
        f"{' (dirty tree)' if commit.get('dirty') else ''}, "
        f"{data['machine_info'].get('cpu', {}).get('brand_raw', '?')}",
        "",
        "| group | backend | min ms | median ms | mean ms | torch min / this min | load |",
        "|---|---|---|---|---|---|---|",
    ]
    for group, by_backend in rows.items():
        for name, s in by_backend.items():
            # Compare with torch in the same storage mode when there is one.
            same = f"torch ({s['storage']})" if "storage" in s else "torch"
            ref = by_backend.get(same) or next(
                (v for k, v in by_backend.items() if k.startswith("torch")), None
            )
            ratio = f"{ref['min'] / s['min']:.2f}x" if ref else "-"
            lines.append(
                f"| {group} | {name} | {s['min'] * 1e3:.2f} | {s['median'] * 1e3:.2f} | "
                f"{s['mean'] * 1e3:.2f} | {ratio} | {s.get('load_avg_1m', '?')} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(summarize(sys.argv[1]))
