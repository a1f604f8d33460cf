"""Before/after timings of the fitting step and the meta-gradient, runnable against any
checkout (it uses only APIs older versions share), with the floor measured in-process.

    PYTHONPATH=CHECKOUT python benchmarks/cpu_speed.py --threads 2 --meta-threads 1 [--mode auto]

Prints one JSON object: ms per fitting step (shipped default network, 128×128 RGB
denoising, momentum-SGD rule; median of 20 after 3 warm-ups), GFLOP per step
(``torch.utils.flop_counter``), the fp32 matmul rate at the same thread count, the ratio
to the floor, and seconds per meta-gradient (one task, T = 20, median of 3) with the
meta-gradient mode; plus the checkout's commit, torch version and the load average.
Quote ratios taken in one session with the machine otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from statistics import median

import torch
from torch.utils.flop_counter import FlopCounterMode

import metadip
from metadip.init import MetaInit
from metadip.inner import init_state, prepare, step
from metadip.meta import meta_gradient
from metadip.operators import Denoise

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.provenance import git_commit  # noqa: E402

SIZE = 128


def _matmul_rate() -> float:
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * 1024**3 / best


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--meta-threads", type=int, default=1)
    p.add_argument("--mode", default="checkpointed")
    p.add_argument("--meta-steps", type=int, default=20)
    args = p.parse_args()
    root = Path(metadip.__file__).resolve().parent.parent
    init = MetaInit.load(root / "metadip" / "weights" / "default.safetensors")
    x = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    op = Denoise(x.shape, 25 / 255)
    y = op.measure(x, torch.Generator().manual_seed(1))

    torch.set_num_threads(args.threads)
    params, hyper = prepare(init, op.in_shape)
    state = init_state(params, hyper)
    times = []
    for i in range(23):
        t0 = time.perf_counter()
        step(params, state, y[None], op, hyper, 0)
        if i >= 3:
            times.append(time.perf_counter() - t0)
    with FlopCounterMode(display=False) as counter:
        step(params, state, y[None], op, hyper, 0)
    flops = counter.get_total_flops()
    rate = _matmul_rate()
    step_s = median(times)

    torch.set_num_threads(args.meta_threads)
    meta = []
    for _ in range(3):
        t0 = time.perf_counter()
        meta_gradient(init, [(x, op, y)], args.meta_steps, mode=args.mode)
        meta.append(time.perf_counter() - t0)
    commit = git_commit()
    print(
        json.dumps(
            {
                "commit": commit,
                "torch": torch.__version__,
                "threads": args.threads,
                "ms_per_step": 1e3 * step_s,
                "gflop_per_step": flops / 1e9,
                "matmul_gflops": rate / 1e9,
                "floor_ratio": step_s / (flops / rate),
                "meta_threads": args.meta_threads,
                "meta_steps": args.meta_steps,
                "meta_mode": args.mode,
                "s_per_meta_gradient": median(meta),
                "loadavg_1min": os.getloadavg()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
