"""Paired timing of the networks' channels-last CPU layout against plain NCHW, in one
process: 50-step reconstructions with the shipped default of each task, the two layouts
alternating (order flipped every round) so that drift of a shared machine hits both.

    python benchmarks/fast_layout_ab.py --threads 2 --tasks denoise,cs,pr --reps 5 \\
        >> benchmarks/results/2026-11-26-cpu-fast-layout.jsonl

"NCHW" swaps ``metadip.networks.to_fast_layout`` and ``channel_cat`` for the identity and
``torch.cat``, which is the network as it ran before the layout existed. Prints one JSON
object: per task the median and best seconds of each layout, the mean paired difference
with its standard error, and the ratio of medians; with threads, commit and load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time

import torch

import metadip
import metadip.networks as networks
from metadip.tasks import make_operator

SIZE, STEPS = 128, 50
FAST = (networks.to_fast_layout, networks.channel_cat)
NCHW = (lambda x: x, lambda a, b: torch.cat([a, b], dim=1))


def _use(layout: tuple) -> None:
    networks.to_fast_layout, networks.channel_cat = layout


def _time(y, op) -> float:
    t0 = time.perf_counter()
    metadip.reconstruct(y, op, steps=STEPS)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tasks", default="denoise,cs,pr")
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    out = {"commit": commit, "torch": torch.__version__, "threads": args.threads}
    out["reps"] = args.reps
    for task in args.tasks.split(","):
        kw = {"sigma": 25 / 255} if task == "denoise" else {"ratio": 0.25}
        op = make_operator(task, (3, SIZE, SIZE), **kw)
        y = op(x)
        times: dict[str, list[float]] = {"nchw": [], "channels_last": []}
        layouts = {"nchw": NCHW, "channels_last": FAST}
        for layout in layouts.values():  # warm-up: oneDNN prepares each layout once
            _use(layout)
            metadip.reconstruct(y, op, steps=2)
        for r in range(args.reps):
            for name in list(layouts)[:: 1 if r % 2 == 0 else -1]:
                _use(layouts[name])
                times[name].append(_time(y, op))
        _use(FAST)
        diff = [a - b for a, b in zip(times["nchw"], times["channels_last"], strict=True)]
        out[task] = {
            **{f"{k}_median_s": statistics.median(v) for k, v in times.items()},
            **{f"{k}_best_s": min(v) for k, v in times.items()},
            "paired_diff_mean_s": statistics.mean(diff),
            "paired_diff_se_s": statistics.stdev(diff) / len(diff) ** 0.5,
            "speedup_of_medians": statistics.median(times["nchw"])
            / statistics.median(times["channels_last"]),
        }
    out["loadavg_1min"] = os.getloadavg()[0]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
