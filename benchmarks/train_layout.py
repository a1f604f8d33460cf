"""Thread layout of meta-training on a 2-core CPU: one process with 1 or 2 threads against
two 1-thread processes sharing the meta-batch (``torchrun``, gloo).

    python benchmarks/train_layout.py [--config configs/default_denoise.toml] [--outer-steps 5]

Each layout trains the same config (meta-batch 4, validation off after step 0) into a
scratch folder and reports the median seconds per outer step over steps 2… (the first
pays for warm-up); one JSON line per layout is appended to
``benchmarks/results/train_layout.jsonl`` with the commit and the load average. Stop
other jobs first: the layouts compete for the same two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
LAYOUTS = [(1, 1), (1, 2), (2, 1)]  # (processes, threads per process)

sys.path.insert(0, str(ROOT))
from benchmarks.provenance import git_commit  # noqa: E402


def run_layout(config: str, procs: int, threads: int, outer: int, out: Path) -> float:
    """Median seconds per outer step (steps 2…) of one layout."""
    args = [
        "train",
        "--config",
        config,
        "--no-progress",
        f"--threads={threads}",
        "--meta-batch=4",
        "--mode=auto",
        f"--outer-steps={outer}",
        "--val-every=100000",
        "--ckpt-every=100000",
        f"--out={out}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop("WORLD_SIZE", None)
    if procs == 1:
        cmd = [sys.executable, "-m", "metadip", *args]
    else:
        run = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd = [*run, f"--nproc-per-node={procs}", "-m", "metadip", *args]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    rows = [json.loads(s) for s in (out / "log.jsonl").read_text().splitlines() if s]
    seconds = [r["seconds"] for r in rows if "seconds" in r and r["step"] >= 2]
    return median(seconds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/default_denoise.toml")
    p.add_argument("--outer-steps", type=int, default=5)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_layout.jsonl"))
    args = p.parse_args()
    for procs, threads in LAYOUTS:
        with tempfile.TemporaryDirectory() as tmp:
            load = os.getloadavg()[0]
            sec = run_layout(args.config, procs, threads, args.outer_steps, Path(tmp) / "run")
        row = {
            "config": args.config,
            "processes": procs,
            "threads": threads,
            "meta_batch": 4,
            "s_per_outer_step": round(sec, 3),
            "commit": git_commit(),
            "loadavg_1min_before": load,
        }
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
