"""Issue lever: the meta-batch as one grouped pass (``meta_gradient(grouped=True)``: B
copies of the initial weights stacked, the network run as grouped convolutions) against
the Python loop over tasks (``grouped=False``), for the unrolled meta-gradient of the
shipped default network at 64×64 (the training crop), T inner steps, one thread.

    python benchmarks/grouped_meta_batch.py [--batch 4] [--steps 10] [--repeats 3]

Checks first that both give the same gradient (float64, tiny network), then prints one
JSON line: seconds per meta-batch (median of ``repeats``) for the loop and the grouped
pass, their ratio, and the load average. Quote it with the machine otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from statistics import median

import torch

import metadip
from metadip.init import MetaInit
from metadip.meta import meta_gradient
from metadip.operators import Denoise


def _tasks(batch: int, size: int, dtype: torch.dtype) -> list:
    gen = torch.Generator().manual_seed(0)
    xs = torch.rand(batch, 3, size, size, generator=gen, dtype=dtype)
    ops = [Denoise((3, size, size), 25 / 255).to(dtype=dtype) for _ in range(batch)]
    return [(x, op, op.measure(x, gen)) for x, op in zip(xs, ops, strict=True)]


def check() -> float:
    """Relative difference of the two gradients (all meta-parameters) in float64."""
    init = MetaInit.random(3, width=4, depth=2, steps=3, seed=1, dtype=torch.float64)
    tasks = _tasks(3, 16, torch.float64)
    _, looped = meta_gradient(init, tasks, 3, mode="unrolled", grouped=False)
    _, grouped = meta_gradient(init, tasks, 3, mode="unrolled", grouped=True)
    diff = torch.cat([(grouped[k] - looped[k]).flatten() for k in looped])
    return float(diff.norm() / torch.cat([v.flatten() for v in looped.values()]).norm())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    error = check()
    root = os.path.dirname(os.path.dirname(os.path.abspath(metadip.__file__)))
    init = MetaInit.load(os.path.join(root, "metadip", "weights", "default.safetensors"))
    tasks = _tasks(args.batch, args.size, torch.float32)
    timings: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for grouped in (False, True):
            t0 = time.perf_counter()
            meta_gradient(init, tasks, args.steps, mode="unrolled", grouped=grouped)
            timings[grouped].append(time.perf_counter() - t0)
    loop, grouped = median(timings[False]), median(timings[True])
    row = {
        "batch": args.batch,
        "steps": args.steps,
        "size": args.size,
        "threads": 1,
        "loop_s": round(loop, 3),
        "grouped_s": round(grouped, 3),
        "speedup": round(loop / grouped, 3),
        "rel_grad_diff_f64": error,
        "load": os.getloadavg(),
        "torch": torch.__version__,
    }
    print(json.dumps(row))


if __name__ == "__main__":
    main()
