"""Paired timing of a fresh process's first reconstruction: import, then one call with
the shipped default (what a script that reconstructs once pays), for two source trees
run alternately (order flipped every round) so that drift of a shared machine hits both.

    python benchmarks/cold_start.py --src old=/path/to/other/checkout --src new=. \
        --tasks denoise,cs --reps 5 >> benchmarks/results/<date>-cpu-cold-start.jsonl

Each ``--src LABEL=DIR`` is put first on ``PYTHONPATH`` of a new ``python`` process run
in DIR (a checkout with its extension built in place: copy ``metadip/_C*.so`` into a
worktree). The child prints the seconds to import torch and metadip, to build the
operator and simulate y (the first kernel call, for CS and PR), of the first
``reconstruct`` (the default init's own steps; its ``rec.seconds``) and of all of it,
and whether ``torch._dynamo`` was imported. Prints one JSON object: per task and tree the medians,
the mean paired difference of the total (first tree − second) with its standard error,
the trees' commits, threads and load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.provenance import git_commit  # noqa: E402

SIZE = 128

CHILD = """
import json, sys, time
t0 = time.perf_counter()
import torch
import metadip
from metadip.tasks import make_operator
torch.set_num_threads({threads})
t1 = time.perf_counter()
kw = {{"sigma": 25 / 255}} if "{task}" == "denoise" else {{"ratio": 0.25}}
op = make_operator("{task}", (3, {size}, {size}), **kw)
y = op(torch.rand(1, 3, {size}, {size}, generator=torch.Generator().manual_seed(0)))[0]
t2 = time.perf_counter()
rec = metadip.reconstruct(y, op, progress=False)
t3 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "setup_s": t2 - t1, "first_call_s": t3 - t2,
                  "fit_s": rec.seconds, "total_s": t3 - t0,
                  "dynamo_imported": "torch._dynamo" in sys.modules}}))
"""


def _run(src: Path, task: str, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src.resolve())}
    code = CHILD.format(task=task, size=SIZE, threads=threads)
    # Run in the tree itself: ``python -c`` puts the working directory first on sys.path.
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=src.resolve(),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", action="append", required=True, help="LABEL=DIR, given twice")
    p.add_argument("--tasks", default="denoise")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    trees = dict(s.split("=", 1) for s in args.src)
    if len(trees) != 2:
        p.error(f"give two --src LABEL=DIR with distinct labels, got {args.src}")
    (a, da), (b, db) = ((k, Path(v)) for k, v in trees.items())
    out: dict = {"trees": {a: git_commit(da), b: git_commit(db)}, "threads": args.threads}
    out["reps"] = args.reps
    for task in args.tasks.split(","):
        rows: dict[str, list[dict]] = {a: [], b: []}
        for r in range(args.reps):
            for label in (a, b) if r % 2 == 0 else (b, a):
                rows[label].append(_run(da if label == a else db, task, args.threads))
        diff = [x["total_s"] - y["total_s"] for x, y in zip(rows[a], rows[b], strict=True)]
        out[task] = {
            label: {
                f"{k}_median": statistics.median(row[k] for row in rs)
                for k in ("import_s", "setup_s", "first_call_s", "fit_s", "total_s")
            }
            | {"dynamo_imported": sorted({row["dynamo_imported"] for row in rs})}
            for label, rs in rows.items()
        }
        out[task]["total_paired_diff_mean_s"] = statistics.mean(diff)
        out[task]["total_paired_diff_se_s"] = statistics.stdev(diff) / len(diff) ** 0.5
    out["loadavg_1min"] = os.getloadavg()[0]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
