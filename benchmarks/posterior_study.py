"""Posterior sampling on the validation patches: is the K-chain mean as good as one
chain, and does its std say where the errors are?

    python benchmarks/posterior_study.py run METHOD TASK [--samples K] [--patches N]
    python benchmarks/posterior_study.py cost METHOD TASK [--ks 1,4,8,16] [--threads T]
    python benchmarks/posterior_study.py table

METHOD and TASK as in ``recipe_study.py`` (``default``, ``dip:0.01:ema``, ...;
``denoise:25``, ``cs:0.25``, ``pr:0.25``). Per patch: one fit with ``samples=1`` (today's
reconstruction) and one with ``samples=K``, same seed and steps; the PSNR of each, and
the calibration of ``rec.std``: Spearman's rank correlation between the std and the
absolute error of the posterior mean, per pixel (and channel) and over 8×8 blocks
(block means). Rows go to ``benchmarks/results/posterior/rows.jsonl``; a rerun skips
what is there. ``cost`` times ``samples=K`` on the first patch for each K (best of
``--repeat``) with the matmul rate and load of the moment, into ``cost.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

import metadip
from metadip.metrics import psnr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipe_study import _method_init, problem, provenance, read_list  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "posterior"
BLOCK = 8


def calibration(std: torch.Tensor, err: torch.Tensor) -> dict[str, float]:
    """Spearman's rho between ``std`` and ``|err|`` ``(C, H, W)``: per value, and between
    their means over ``BLOCK``×``BLOCK`` blocks."""
    a, e = std.double(), err.double().abs()
    pixel = spearmanr(a.flatten().numpy(), e.flatten().numpy()).statistic
    pool = torch.nn.functional.avg_pool2d
    ab, eb = pool(a.mean(0, keepdim=True), BLOCK), pool(e.mean(0, keepdim=True), BLOCK)
    block = spearmanr(ab.flatten().numpy(), eb.flatten().numpy()).statistic
    return {"pixel": float(pixel), "block": float(block)}


def cmd_run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "rows.jsonl"
    done = set()
    if path.is_file():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            done.add((r["method"], r["task"], r["patch"], r["samples"], r["steps"]))
    for patch, x in read_list(args.list)[: args.patches]:
        spec, seed, x, op, y = problem(args.task, x, patch)
        init = _method_init(args.method, op)
        steps = args.steps or init.steps
        if (args.method, args.task, patch, args.samples, steps) in done:
            continue
        one = metadip.reconstruct(y, op, init=init, steps=steps, seed=seed)
        many = metadip.reconstruct(y, op, init=init, steps=steps, seed=seed, samples=args.samples)
        row = {
            "method": args.method,
            "task": args.task,
            "patch": patch,
            "samples": args.samples,
            "steps": steps,
            "psnr": {
                "one": psnr(one.image.clamp(0, 1), x),
                "mean": psnr(many.image.clamp(0, 1), x),
            },
            "spearman": calibration(many.std, many.image - x),
            "mean_std": float(many.std.mean()),
            "seconds": {"one": one.seconds, "many": many.seconds},
            **provenance(args.threads),
        }
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
        p, s = row["psnr"], row["spearman"]
        print(
            f"{args.method} {args.task} {patch} K={args.samples}: one {p['one']:.2f}, "
            f"mean {p['mean']:.2f} dB; rho pixel {s['pixel']:.2f}, block {s['block']:.2f} "
            f"({many.seconds:.1f} s vs {one.seconds:.1f} s)",
            flush=True,
        )


def cmd_cost(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    patch, x = read_list(args.list)[0]
    spec, seed, x, op, y = problem(args.task, x, patch)
    init = _method_init(args.method, op)
    a = torch.randn(1024, 1024)
    start = time.perf_counter()
    for _ in range(10):
        a @ a
    gflops = 10 * 2 * 1024**3 / (time.perf_counter() - start) / 1e9
    seconds = {}
    for k in [int(v) for v in args.ks.split(",")]:
        runs = [
            metadip.reconstruct(y, op, init=init, seed=seed, samples=k).seconds
            for _ in range(args.repeat)
        ]
        seconds[str(k)] = min(runs)
        print(f"{args.method} {args.task} K={k}: {seconds[str(k)]:.2f} s", flush=True)
    row = {
        "method": args.method,
        "task": args.task,
        "patch": patch,
        "steps": init.steps,
        "seconds": seconds,
        "relative": {k: v / seconds["1"] for k, v in seconds.items()} if "1" in seconds else {},
        "matmul_gflops": gflops,
        **provenance(args.threads),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "cost.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def _se(v: np.ndarray) -> float:
    return float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


def cmd_table(args: argparse.Namespace) -> None:
    rows = [json.loads(s) for s in (OUT / "rows.jsonl").read_text().splitlines() if s.strip()]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["task"], r["samples"], r["steps"]), []).append(r)
    lines = [
        "| method | task | K | steps | patches | one chain (dB) | K-chain mean (dB) "
        "| paired Δ | ρ pixel | ρ 8×8 block | time K / time 1 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (method, task, k, steps), rs in sorted(groups.items()):
        one = np.array([r["psnr"]["one"] for r in rs])
        mean = np.array([r["psnr"]["mean"] for r in rs])
        pix = np.array([r["spearman"]["pixel"] for r in rs])
        blk = np.array([r["spearman"]["block"] for r in rs])
        ratio = np.array([r["seconds"]["many"] / r["seconds"]["one"] for r in rs])
        lines.append(
            f"| {method} | {task} | {k} | {steps} | {len(rs)} | {one.mean():.2f} ± {_se(one):.2f} "
            f"| {mean.mean():.2f} ± {_se(mean):.2f} | {(mean - one).mean():+.2f} ± "
            f"{_se(mean - one):.2f} | {pix.mean():.2f} ± {_se(pix):.2f} | "
            f"{blk.mean():.2f} ± {_se(blk):.2f} | {ratio.mean():.1f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("method")
    r.add_argument("task")
    r.add_argument("--samples", type=int, default=4)
    r.add_argument("--steps", type=int, default=0, help="0: the init's own horizon")
    r.add_argument("--patches", type=int, default=8)
    r.add_argument("--list", default="validation.tsv")
    r.add_argument("--threads", type=int, default=1)
    c = sub.add_parser("cost")
    c.add_argument("method")
    c.add_argument("task")
    c.add_argument("--ks", default="1,4,8,16")
    c.add_argument("--repeat", type=int, default=2)
    c.add_argument("--list", default="validation.tsv")
    c.add_argument("--threads", type=int, default=2)
    t = sub.add_parser("table")
    t.add_argument("--out", default="")
    args = p.parse_args(argv)
    {"run": cmd_run, "cost": cmd_cost, "table": cmd_table}[args.cmd](args)


if __name__ == "__main__":
    main()
