"""50-step reconstructions at 128×128: eager vs CUDA graph vs batched.

    pytest benchmarks/bench_reconstruct.py --benchmark-json=benchmarks/results/<name>.json

Rows: task (denoise σ=25, cs and pr at m/n = 1/4) × mode × B problems per call.
``eager``/``graph``: ``reconstruct`` with ``graph=False/True`` (graph rows on CUDA
only), B networks as grouped convolutions; ``vmap``: the same fit written with
``torch.func.vmap`` over stacked parameters (the alternative the grouped path was
chosen over; denoise and cs only — the complex-measurement custom op has no vmap
rule). ``extra_info`` holds ms per reconstruction, reconstructions per second,
peak memory, and the ratio to the compute floor (FLOPs of one step counted with
``torch.utils.flop_counter`` × steps, over the measured fp32 matmul rate).
``METADIP_BENCH_BATCHES`` (default ``1,8,32``) picks B; the init is the shipped
default for the task (``METADIP_BENCH_INIT`` overrides), with its own self-ensemble
(``METADIP_BENCH_ENSEMBLE`` overrides; the floor counts the steps only, not the
ensemble's extra forward passes). ``METADIP_BENCH_STEPS`` (default 50) sets the steps.
"""

from __future__ import annotations

import os
import resource
from dataclasses import replace

import pytest
import torch
from torch.func import functional_call, grad, vmap

from benchmarks.conftest import devices, environment, matmul_rate, step_flops, sync
from metadip import reconstruct
from metadip.inner import prepare
from metadip.networks import network_input
from metadip.reference import tv_ref
from metadip.shipped import load_init
from metadip.tasks import make_operator

SIZE = 128
# Steps per fit (0: the init's own image, e.g. a pretrained map's self-ensemble).
STEPS = int(os.environ.get("METADIP_BENCH_STEPS", "50"))
TASKS = {"denoise": {"sigma": 25 / 255}, "cs": {"ratio": 0.25}, "pr": {"ratio": 0.25}}
BATCHES = [int(b) for b in os.environ.get("METADIP_BENCH_BATCHES", "1,8,32").split(",")]
# Eager CUDA fits are launch-bound (1.2 s for one 50-step fit on an H200), so a GPU run
# times them at the two ends only, beside the graph rows at every B.
EAGER_CUDA_BATCHES = {BATCHES[0], BATCHES[-1]}


def _init(device, task):
    """The init reconstruct would use for ``task`` (``METADIP_BENCH_INIT`` overrides)."""
    name = os.environ.get("METADIP_BENCH_INIT", "default")
    meta = load_init(name, channels=3, task=task).to(device)
    ensemble = os.environ.get("METADIP_BENCH_ENSEMBLE")
    return meta if ensemble is None else replace(meta, ensemble=int(ensemble))


def vmap_fit(meta, op, ys, steps):
    """The SGD meta-rule fit of B problems with torch.func.vmap over stacked parameters."""
    params, hyper = prepare(meta, op.in_shape, steps=steps)
    inp = network_input(hyper.config, hyper.fixed, hyper.fourier_b)

    def loss(p, y):
        x = functional_call(hyper.net, p, (inp,))
        fit = (op.forward(x) - y[None]).pow(2).mean()
        return fit + hyper.tv_weight * tv_ref(x, hyper.tv_eps)[0] / x[0].numel()

    g_fn = vmap(grad(loss))
    b = ys.shape[0]
    p = {k: v.expand(b, *v.shape).contiguous() for k, v in params.items()}
    m = {k: torch.zeros_like(v) for k, v in p.items()}
    for t in range(steps):
        g = g_fn(p, ys)
        lrs = hyper.lr[min(t, hyper.lr.shape[0] - 1)]
        for i, k in enumerate(p):
            m[k] = hyper.momentum * m[k] + g[k]
            p[k] = p[k] - lrs[i] * m[k]
    return p


def _peak_memory(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak, MiB


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("mode", ["eager", "graph", "vmap"])
@pytest.mark.parametrize("task", list(TASKS))
def test_reconstruct(benchmark, task, mode, batch, device):
    if mode == "graph" and device != "cuda":
        pytest.skip("CUDA graphs need a CUDA device")
    if mode == "vmap" and (task == "pr" or batch == 1):
        pytest.skip("vmap: denoise and cs at B > 1 only (no vmap rule for the PR custom op)")
    if mode == "eager" and device == "cuda" and batch not in EAGER_CUDA_BATCHES:
        pytest.skip("eager on CUDA at B = 1 and the largest B only: seconds per fit")
    meta = _init(device, task)
    if mode == "vmap" and meta.config.guided:
        pytest.skip("vmap: the noise-input networks only")
    op = make_operator(task, (3, SIZE, SIZE), seed=0, **TASKS[task])
    x = torch.rand(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    # Measured on the CPU (the generator's device), then the operator moves to the device.
    y = op.measure(x, torch.Generator().manual_seed(1)).to(device)
    op = op.to(device=device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def run():
        if mode == "vmap":
            out = vmap_fit(meta, op, y, STEPS)
        else:
            out = reconstruct(y, op, init=meta, steps=STEPS, graph=mode == "graph")
        sync(device)
        return out

    run()  # warm-up (and, for graph rows, the capture)
    rounds = 3 if device == "cuda" else max(1, 3 // batch)
    benchmark.pedantic(run, rounds=rounds, iterations=1)
    seconds = benchmark.stats.stats.min
    flops = step_flops(meta, op, y) * STEPS
    floor = flops / matmul_rate(device)  # 0 for a 0-step run: no ratio then
    benchmark.group = f"reconstruct-{task}-{SIZE}"
    benchmark.extra_info.update(
        environment(device),
        task=task,
        mode=mode,
        batch=batch,
        steps=STEPS,
        network=f"skip {meta.config.depth}x{meta.config.width}",
        ensemble=meta.ensemble,
        ms_per_reconstruction=1e3 * seconds / batch,
        reconstructions_per_s=batch / seconds,
        peak_memory_mib=_peak_memory(device),
        gflop=flops / 1e9,
        matmul_gflops=matmul_rate(device) / 1e9,
        floor_ratio=seconds / floor if floor > 0 else None,
    )
