"""Peak memory (and time) of one meta-gradient vs the inner horizon, unrolled vs checkpointed.

Every point runs in a fresh subprocess, so one point's allocations never raise
another's high-water mark:

* CPU: peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) of
  the whole process, and the same minus the RSS just before the meta-gradient
  (``delta``: what the meta-gradient itself needs), at 64×64;
* GPU (when CUDA is available): ``torch.cuda.max_memory_allocated`` at 128×128.

A 1-step meta-gradient first warms the process up (one-time allocations are
not the meta-gradient's); the measured call gives the peak and the time. Usage::

    python benchmarks/bench_meta_memory.py                      # CPU table
    python benchmarks/bench_meta_memory.py --device cuda --size 128 --steps 5,10,20,50,100,200

Writes ``benchmarks/results/meta_memory_<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _rss_mb() -> float:
    """Current resident set size in MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def point(args: argparse.Namespace) -> dict:
    """One measurement, in this (fresh) process."""
    import torch

    from metadip.init import MetaInit
    from metadip.meta import meta_gradient
    from metadip.planning import default_segment
    from metadip.tasks import make_operator

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    init = MetaInit.random(3, width=args.width, depth=args.depth, steps=args.steps, seed=0)
    init = init.to(dev, torch.float32)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, args.size, args.size, generator=g)
    op = make_operator("denoise", x.shape, sigma=25 / 255)
    y = op.measure(x, g)
    tasks = [(x.to(dev), op, y.to(dev))]
    segment = args.segment or default_segment(args.steps)
    mode = args.mode
    # Warm-up with a 1-step meta-gradient: one-time allocations (thread pools, oneDNN/cuBLAS
    # workspaces, autograd engine) would otherwise count as part of every point.
    meta_gradient(init, tasks, 1, mode=mode, segment=1)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = _rss_mb()
    t0 = time.perf_counter()
    meta_gradient(init, tasks, args.steps, mode=mode, segment=segment)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    seconds = time.perf_counter() - t0
    # Further calls for the time only (the CPU may be shared: keep the fastest).
    for _ in range(args.repeats - 1):
        t0 = time.perf_counter()
        meta_gradient(init, tasks, args.steps, mode=mode, segment=segment)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        seconds = min(seconds, time.perf_counter() - t0)
    return {
        "mode": mode,
        "steps": args.steps,
        "segment": segment if mode == "checkpointed" else None,
        "peak_mib": round(peak, 1),
        "base_mib": round(base, 1),
        "delta_mib": round(peak - base, 1),
        "seconds": round(seconds, 3),
    }


def _sqrt_segment(steps: int) -> int:
    return max(1, math.ceil(math.sqrt(steps)))


def run_all(args: argparse.Namespace) -> list[dict]:
    rows = []
    series = [("unrolled", 0), ("checkpointed", 0)]
    if args.fixed_segment:
        series.append(("checkpointed", args.fixed_segment))
    for steps in args.steps_list:
        for mode, seg in series:
            if mode == "checkpointed" and seg == _sqrt_segment(steps) and seg != 0:
                continue  # the same as the default-segment row
            if mode == "unrolled" and args.max_unrolled and steps > args.max_unrolled:
                continue
            cmd = [
                sys.executable,
                __file__,
                "--point",
                f"--mode={mode}",
                f"--steps={steps}",
                f"--segment={seg}",
                f"--width={args.width}",
                f"--depth={args.depth}",
                f"--size={args.size}",
                f"--device={args.device}",
                f"--threads={args.threads}",
                f"--repeats={args.repeats}",
            ]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            if proc.returncode != 0:
                row = {"mode": mode, "steps": steps, "error": proc.stderr.strip()[-400:]}
            else:
                row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return rows


def markdown(meta: dict, rows: list[dict]) -> str:
    unit = "max_memory_allocated" if meta["device"] != "cpu" else "peak RSS"
    lines = [
        f"# Meta-gradient peak memory vs inner steps ({meta['device']})",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"One meta-gradient of one {meta['size']}x{meta['size']} RGB denoising task, skip "
        f"network width {meta['width']}, depth {meta['depth']}, float32, {meta['threads']} "
        f"thread(s); each row a fresh process. Memory: {unit} in MiB; delta = peak minus "
        "the process's memory just before the meta-gradient (after a 1-step warm-up). "
        f"Time: fastest of {meta['repeats']} calls (the CPU was shared: times are noisy).",
        f"Machine: {meta['machine']}.",
        "",
        "| steps | mode | segment | peak MiB | delta MiB | seconds |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['steps']} | {r['mode']} | | failed | | |")
            continue
        seg = r["segment"] if r["segment"] is not None else ""
        lines.append(
            f"| {r['steps']} | {r['mode']} | {seg} | {r['peak_mib']:.0f} | {r['delta_mib']:.0f} "
            f"| {r['seconds']:.2f} |"
        )
    lines += ["", *summary(rows)]
    return "\n".join(lines) + "\n"


def summary(rows: list[dict]) -> list[str]:
    """Checkpointed growth 10 -> 100 steps and the time overhead over unrolled."""
    ok = [r for r in rows if "error" not in r]

    def get(mode: str, steps: int, fixed: bool = False) -> dict | None:
        for r in ok:
            if r["mode"] == mode and r["steps"] == steps:
                default = r["segment"] in (None, math.ceil(math.sqrt(steps)))
                if fixed != default or mode == "unrolled":
                    return r
        return None

    out = []
    a, b = get("checkpointed", 10), get("checkpointed", 100)
    if a and b:
        out.append(
            f"Checkpointed (segment ceil(sqrt(T))) peak at 100 steps / at 10 steps: "
            f"{b['peak_mib'] / a['peak_mib']:.2f}x (delta {b['delta_mib'] / a['delta_mib']:.2f}x)."
        )
    u10, u100 = get("unrolled", 10), get("unrolled", 100)
    if u10 and u100:
        out.append(
            f"Unrolled peak at 100 steps / at 10 steps: {u100['peak_mib'] / u10['peak_mib']:.2f}x "
            f"(delta {u100['delta_mib'] / u10['delta_mib']:.2f}x)."
        )
    ratios = []
    for r in ok:
        if r["mode"] == "checkpointed" and r["segment"] == math.ceil(math.sqrt(r["steps"])):
            u = get("unrolled", r["steps"])
            if u:
                ratios.append((r["steps"], r["seconds"] / u["seconds"]))
    if ratios:
        text = ", ".join(f"{s}: {q:.2f}x" for s, q in ratios)
        out.append(f"Time checkpointed / unrolled by steps: {text}.")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--point", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="checkpointed")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--segment", type=int, default=0)
    p.add_argument("--steps-list", default="5,10,20,50,100")
    p.add_argument("--fixed-segment", type=int, default=5, help="extra series (0: none)")
    p.add_argument("--max-unrolled", type=int, default=0, help="skip unrolled beyond this")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--timeout", type=int, default=1800)
    p.add_argument("--repeats", type=int, default=2, help="time = fastest of N calls")
    p.add_argument("--tag", default="", help="suffix of the result file names")
    args = p.parse_args()
    if args.point:
        print(json.dumps(point(args)))
        return
    args.steps_list = [int(s) for s in args.steps_list.split(",")]
    rows = run_all(args)
    meta = {
        "device": args.device,
        "width": args.width,
        "depth": args.depth,
        "size": args.size,
        "threads": args.threads,
        "repeats": args.repeats,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, "
        f"python {platform.python_version()}",
        "command": "python benchmarks/bench_meta_memory.py " + " ".join(sys.argv[1:]),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"meta_memory_{args.device.split(':')[0]}{args.tag}"
    (RESULTS / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (RESULTS / f"{stem}.md").write_text(markdown(meta, rows))
    print(markdown(meta, rows))


if __name__ == "__main__":
    main()
