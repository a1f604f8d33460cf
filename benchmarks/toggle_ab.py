"""Paired timing of one speed feature on and off, in one process: 50-step
reconstructions with the shipped default of each task, the two settings alternating
(order flipped every round) so that drift of a shared machine hits both.

    python benchmarks/toggle_ab.py --toggle fast-layout --threads 2 --tasks denoise,cs,pr \
        --reps 5 >> benchmarks/results/2026-11-26-cpu-fast-layout.jsonl
    python benchmarks/toggle_ab.py --toggle fused-residual --tasks cs,pr \
        >> benchmarks/results/2026-11-26-cpu-fused-residual.jsonl

Toggles: ``fast-layout``, the networks' channels-last CPU layout (off: ``to_fast_layout``
and ``channel_cat`` swapped for the identity and ``torch.cat``, the network as it ran
before); ``fused-residual``, the dense CS and PR one-pass data fit (off:
``fused_residual = False`` on CompressiveSensing and PhaseRetrieval, the forward then
its adjoint); ``host-checks``, the CPU fitting loop's skipping of the restore selects
on steps every problem accepts (off: ``run_loop(host_checks=False)``, the device path);
``ensemble``, the shipped self-ensemble (off: ``ensemble=1``; it costs, not saves:
``on`` is the shipped setting). ``--steps`` (default 50; 0 times the pretrained map).
Prints one
JSON object: per task the median and best seconds of each setting, the mean paired
difference (off − on) with its standard error, and the ratio of medians; with the toggle,
threads, commit and load average.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import metadip
import metadip.loop as loop
import metadip.networks as networks
from metadip.operators import CompressiveSensing, PhaseRetrieval
from metadip.tasks import make_operator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.provenance import git_commit  # noqa: E402

SIZE, STEPS = 128, 50
LAYOUT = (networks.to_fast_layout, networks.channel_cat)


def _layout(on: bool) -> None:
    networks.to_fast_layout, networks.channel_cat = (
        LAYOUT if on else (lambda x: x, lambda a, b: torch.cat([a, b], dim=1))
    )


def _residual(on: bool) -> None:
    CompressiveSensing.fused_residual = PhaseRetrieval.fused_residual = on


RUN_LOOP = loop.run_loop
EXTRA: dict = {}


def _host_checks(on: bool) -> None:
    loop.run_loop = RUN_LOOP if on else functools.partial(RUN_LOOP, host_checks=False)


def _ensemble(on: bool) -> None:
    EXTRA["ensemble"] = None if on else 1


TOGGLES = {
    "fast-layout": _layout,
    "fused-residual": _residual,
    "host-checks": _host_checks,
    "ensemble": _ensemble,
}


def _time(y, op, steps: int) -> float:
    t0 = time.perf_counter()
    metadip.reconstruct(y, op, steps=steps, **EXTRA)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--toggle", choices=sorted(TOGGLES), required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tasks", default="denoise,cs,pr")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--steps", type=int, default=STEPS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    use = TOGGLES[args.toggle]
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    commit = git_commit()
    out = {"toggle": args.toggle, "commit": commit, "torch": torch.__version__}
    out.update(threads=args.threads, reps=args.reps, steps=args.steps)
    for task in args.tasks.split(","):
        kw = {"sigma": 25 / 255} if task == "denoise" else {"ratio": 0.25}
        op = make_operator(task, (3, SIZE, SIZE), **kw)
        y = op(x)
        times: dict[str, list[float]] = {"off": [], "on": []}
        for setting in (False, True):  # warm-up: oneDNN prepares each layout once
            use(setting)
            metadip.reconstruct(y, op, steps=2)
        for r in range(args.reps):
            for name in ("off", "on") if r % 2 == 0 else ("on", "off"):
                use(name == "on")
                times[name].append(_time(y, op, args.steps))
        use(True)
        diff = [a - b for a, b in zip(times["off"], times["on"], strict=True)]
        out[task] = {
            **{f"{k}_median_s": statistics.median(v) for k, v in times.items()},
            **{f"{k}_best_s": min(v) for k, v in times.items()},
            "paired_diff_mean_s": statistics.mean(diff),
            "paired_diff_se_s": statistics.stdev(diff) / len(diff) ** 0.5,
            "speedup_of_medians": statistics.median(times["off"]) / statistics.median(times["on"]),
        }
    out["loadavg_1min"] = os.getloadavg()[0]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
