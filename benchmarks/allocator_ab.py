"""Paired timings with and without ``metadip.allocator.tune_allocator`` (glibc's mmap and
trim thresholds raised), each run a fresh process (the setting is process-wide and
cannot be undone in-process), the two alternating ABBA.

    python -m benchmarks.allocator_ab [--workloads fit-w32,fit-w48-sure,...] [--reps 4] \\
        [--out benchmarks/results/<date>-cpu-allocator.jsonl]

Workloads (the fitting step on 128² denoising, Educated-DIP network, Adam, one problem):
  ``fit-w32``       width 32, data-fit loss, 2 threads (issue 16's step)
  ``fit-w32-sure``  the same on SURE (two network passes a step)
  ``fit-w48-sure``  width 48 on SURE: the shipped denoising default's step
  ``pretrain-w48``  one pretraining step of the default's training (16 noisy 64² patches,
                    width 48), 1 thread: what a training thread runs
  ``meta-t20``      one meta-gradient of the MetaDIP default, one task, T = 20, 1 thread
  ``denoise``       ``reconstruct(y, op)`` with the shipped denoising default, 2 threads
  ``denoise-50``    the same with ``steps=50`` (its time target: 3 s)
Each child prints ms (median; the fitting steps also GFLOP, the matmul rate it measured
and the ratio to the floor) and the page faults it took while timed. The parent prints
per workload the medians and the paired speed-up (mean ± s.e. over reps) and appends
every child's row, with commit and load average, to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from statistics import mean, median, stdev

THREADS = {"pretrain-w48": 1, "meta-t20": 1}
WORKLOADS = (
    "fit-w32",
    "fit-w32-sure",
    "fit-w48-sure",
    "pretrain-w48",
    "meta-t20",
    "denoise",
    "denoise-50",
)


def _timed(fn, reps: int, warmup: int) -> tuple[float, int]:
    """Median seconds of ``fn`` over ``reps`` calls after ``warmup``, and the minor page
    faults of the timed calls."""
    for _ in range(warmup):
        fn()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return median(times), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


def _fit(width: int, loss: str) -> dict:
    from dataclasses import replace

    import torch

    from benchmarks.bench_inner import NETWORKS
    from benchmarks.conftest import floor_info, step_flops
    from metadip.guide import guide_input
    from metadip.init import MetaInit
    from metadip.inner import init_state, prepare, step
    from metadip.operators import Denoise

    init = MetaInit.random(3, width=width, depth=4, steps=1, rule="adam", **NETWORKS["educated"])
    init = replace(init, loss=loss)
    op = Denoise((3, 128, 128), 25 / 255)
    y = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    params, hyper = prepare(init, op.in_shape, guide=guide_input(init.config, op, y))
    state = init_state(params, hyper)
    seconds, faults = _timed(lambda: step(params, state, y, op, hyper, 0), 20, 5)
    flops = step_flops(init, op, y) if loss == "mse" else None
    info = floor_info(seconds, flops, "cpu") if flops else {"ms_per_step": 1e3 * seconds}
    return {**info, "faults": faults}


def _pretrain() -> dict:
    from dataclasses import replace

    import torch

    from metadip.guide import guide_input
    from metadip.networks import build_network
    from metadip.operators import Denoise
    from metadip.train import TrainConfig
    from metadip.train.educated import educated_init, pretrain_step

    root = Path(__file__).resolve().parents[1]
    cfg = replace(TrainConfig.from_toml(root / "configs" / "educated_denoise.toml"), width=48)
    init = educated_init(cfg, torch.float32)
    net = build_network(init.config)
    net.load_state_dict(init.weights)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.outer_lr)
    g = torch.Generator().manual_seed(0)
    x = torch.rand((cfg.meta_batch, 3, cfg.patch, cfg.patch), generator=g)
    op = Denoise(x.shape[1:], 25 / 255)
    guide = guide_input(init.config, op, x + op.sigma * torch.randn(x.shape, generator=g))
    seconds, faults = _timed(lambda: pretrain_step(net, opt, guide, x, cfg.loss, cfg.clip), 8, 2)
    return {"ms_per_step": 1e3 * seconds, "faults": faults}


def _meta() -> dict:
    import torch

    from metadip.meta import meta_gradient
    from metadip.operators import Denoise
    from metadip.shipped import load_init

    init = load_init("default")
    x = torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(0))
    op = Denoise(x.shape, 25 / 255)
    y = op.measure(x, torch.Generator().manual_seed(1))
    seconds, faults = _timed(lambda: meta_gradient(init, [(x, op, y)], 20), 3, 1)
    return {"ms": 1e3 * seconds, "faults": faults}


def _denoise(steps: int | None) -> dict:
    import torch

    import metadip

    x = torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(0))
    op = metadip.Denoise(x.shape, 25 / 255)
    y = op.measure(x, torch.Generator().manual_seed(1))
    seconds, faults = _timed(lambda: metadip.reconstruct(y, op, steps=steps, progress=False), 3, 1)
    return {"ms": 1e3 * seconds, "faults": faults}


def child(workload: str, tuned: bool) -> dict:
    """Runs one workload in this process, with the allocator tuned first or not."""
    applied = None
    if tuned:
        from metadip.allocator import tune_allocator

        applied, reason = tune_allocator()
        if not applied:
            raise SystemExit(f"tune_allocator did not apply: {reason}")
    import torch

    torch.set_num_threads(THREADS.get(workload, 2))
    run = {
        "fit-w32": lambda: _fit(32, "mse"),
        "fit-w32-sure": lambda: _fit(32, "sure"),
        "fit-w48-sure": lambda: _fit(48, "sure"),
        "pretrain-w48": _pretrain,
        "meta-t20": _meta,
        "denoise": lambda: _denoise(None),
        "denoise-50": lambda: _denoise(50),
    }[workload]
    return {"workload": workload, "tuned": tuned, "threads": torch.get_num_threads(), **run()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--reps", type=int, default=4, help="pairs per workload")
    p.add_argument("--out", default="")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    p.add_argument("--tuned", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, bool(args.tuned))))
        return
    workloads = args.workloads.split(",")
    unknown = sorted(set(workloads) - set(WORKLOADS))
    if unknown or args.reps < 2:
        raise SystemExit(f"unknown workloads {unknown} (choose from {WORKLOADS}) or --reps < 2")
    from benchmarks.provenance import git_commit

    commit = git_commit()
    root = Path(__file__).resolve().parents[1]
    for workload in workloads:
        rows: dict[bool, list[dict]] = {False: [], True: []}
        for rep in range(args.reps):
            for tuned in (False, True) if rep % 2 == 0 else (True, False):
                # The benchmark helpers tune on import unless METADIP_MALLOC=0.
                env = {
                    **os.environ,
                    "OMP_NUM_THREADS": str(THREADS.get(workload, 2)),
                    "METADIP_MALLOC": str(int(tuned)),
                }
                cmd = [sys.executable, "-m", "benchmarks.allocator_ab", "--child", workload]
                out = subprocess.run(
                    [*cmd, "--tuned", str(int(tuned))],
                    cwd=root,
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                row = json.loads(out.stdout.strip().splitlines()[-1])
                row.update(commit=commit, rep=rep, loadavg_1min=os.getloadavg()[0])
                rows[tuned].append(row)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(row) + "\n")
        key = "ms_per_step" if "ms_per_step" in rows[False][0] else "ms"
        base = [r[key] for r in rows[False]]
        new = [r[key] for r in rows[True]]
        ratios = [b / n for b, n in zip(base, new, strict=True)]
        se = stdev(ratios) / len(ratios) ** 0.5
        extra = ""
        if "floor_ratio" in rows[False][0]:
            fb = median(r["floor_ratio"] for r in rows[False])
            fn = median(r["floor_ratio"] for r in rows[True])
            extra = f", floor ratio {fb:.2f} -> {fn:.2f}"
        faults = (median(r["faults"] for r in rows[False]), median(r["faults"] for r in rows[True]))
        print(
            f"{workload}: {median(base):.1f} -> {median(new):.1f} ms (medians), "
            f"paired speed-up {mean(ratios):.3f} ± {se:.3f}{extra}, "
            f"page faults {faults[0]:.0f} -> {faults[1]:.0f}"
        )


if __name__ == "__main__":
    main()
