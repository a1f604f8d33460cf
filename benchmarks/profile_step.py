"""Where one fitting step's time goes, per operator, at two thread counts: which parts
of the step a second thread speeds up and which it does not.

    python -m benchmarks.profile_step [--threads 1,2] [--rows 18] \\
        > benchmarks/results/<date>-cpu-profile-step.txt

The Educated-DIP network of ``bench_inner`` (width 32, depth 4, image input, residual,
no normalization), denoising 128², Adam, one problem; each thread count in its own
process (torch's thread pool is fixed once used), 10 profiled steps after 5 warm-up steps.
Prints the self CPU ms per step of the slowest operators and the ratio between counts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch

from benchmarks.bench_inner import NETWORKS
from metadip.guide import guide_input
from metadip.init import MetaInit
from metadip.inner import init_state, prepare, step
from metadip.operators import Denoise

SIZE = 128


def profile_once(threads: int) -> dict[str, float]:
    """Self CPU ms per step of each operator at ``threads`` threads (this process)."""
    torch.set_num_threads(threads)
    init = MetaInit.random(3, width=32, depth=4, steps=1, rule="adam", **NETWORKS["educated"])
    op = Denoise((3, SIZE, SIZE), 25 / 255)
    y = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    params, hyper = prepare(init, op.in_shape, guide=guide_input(init.config, op, y))
    state = init_state(params, hyper)
    for _ in range(5):
        step(params, state, y, op, hyper, 0)
    with torch.profiler.profile() as prof:
        for _ in range(10):
            step(params, state, y, op, hyper, 0)
    return {e.key: e.self_cpu_time_total / 10 / 1e3 for e in prof.key_averages()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rows", type=int, default=18)
    p.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(profile_once(args.child)))
        return
    counts = [int(t) for t in args.threads.split(",")]
    runs = {}
    for t in counts:
        env = {**os.environ, "OMP_NUM_THREADS": str(t)}
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.profile_step", "--child", str(t)],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout
        runs[t] = json.loads(out.strip().splitlines()[-1])
    first, last = runs[counts[0]], runs[counts[-1]]
    print(f"load average {os.getloadavg()[0]:.2f}, torch {torch.__version__}")
    header = "".join(f"{f'{t} thr ms':>10}" for t in counts)
    print(f"{'operator':48s}{header}  ratio")
    totals = "".join(f"{sum(runs[t].values()):10.2f}" for t in counts)
    ratio = sum(first.values()) / sum(last.values())
    print(f"{'all (self CPU per step)':48s}{totals}  {ratio:.2f}")
    for key in sorted(first, key=lambda k: -first[k])[: args.rows]:
        cells = "".join(f"{runs[t].get(key, 0.0):10.2f}" for t in counts)
        print(f"{key[:48]:48s}{cells}  {first[key] / max(last.get(key, 0.0), 1e-9):.2f}")


if __name__ == "__main__":
    main()
