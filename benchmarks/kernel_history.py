"""The kernel benchmarks' append-only history, and the README table generated from it.

    python -m pytest benchmarks/bench_tv.py benchmarks/bench_fourier.py \\
        benchmarks/bench_cmeasure.py --benchmark-json run.json
    python benchmarks/kernel_history.py append run.json      # adds its rows once
    python benchmarks/kernel_history.py table --readme README.md

``append`` adds one row per benchmark of a pytest-benchmark JSON to
``benchmarks/results/kernel_history.csv`` (keyed by run time, commit and benchmark
name, so appending the same file twice adds nothing): op, backend, device, dtype,
shape, threads, versions, commit (and whether the tree was dirty), load average and
the min / median / mean milliseconds. ``table`` takes, per (group, backend, device),
the latest run's row and prints a markdown table of medians with the speed-up over the
torch reference of the same run; ``--readme FILE`` writes it between the
``<!-- kernel-table:start -->`` / ``<!-- kernel-table:end -->`` markers.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

HISTORY = Path(__file__).resolve().parent / "results" / "kernel_history.csv"
FIELDS = (
    "datetime",
    "commit",
    "dirty",
    "group",
    "name",
    "op",
    "backend",
    "storage",
    "device",
    "device_name",
    "dtype",
    "shape",
    "threads",
    "torch",
    "triton",
    "min_ms",
    "median_ms",
    "mean_ms",
    "rounds",
    "load_avg_1m",
    "source",
)
START, END = "<!-- kernel-table:start -->", "<!-- kernel-table:end -->"


def rows_of(report: dict, source: str) -> list[dict[str, str]]:
    """One history row per benchmark of a pytest-benchmark JSON report."""
    commit = report.get("commit_info", {})
    out = []
    for b in report["benchmarks"]:
        info, stats = b.get("extra_info", {}), b["stats"]
        group = b.get("group") or b["name"]
        out.append(
            {
                "datetime": report["datetime"],
                "commit": str(commit.get("id", ""))[:10],
                "dirty": str(bool(commit.get("dirty", False))),
                "group": group,
                "name": b["name"],
                "op": group.split("-")[0],
                "backend": str(info.get("backend", "")),
                "storage": str(info.get("storage", "")),
                "device": str(info.get("device", "")),
                "device_name": str(info.get("device_name", "")),
                "dtype": str(info.get("dtype", "")),
                "shape": "x".join(map(str, info.get("shape", []))),
                "threads": str(info.get("threads", "")),
                "torch": str(info.get("torch", "")),
                "triton": str(info.get("triton", "")),
                "min_ms": f"{1e3 * stats['min']:.6g}",
                "median_ms": f"{1e3 * stats['median']:.6g}",
                "mean_ms": f"{1e3 * stats['mean']:.6g}",
                "rounds": str(stats["rounds"]),
                "load_avg_1m": str(info.get("load_avg_1m", "")),
                "source": source,
            }
        )
    return out


def read_history(path: Path = HISTORY) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def append(reports: list[Path], path: Path = HISTORY) -> int:
    """Appends the rows of ``reports`` not in the history yet; returns how many."""
    seen = {(r["datetime"], r["commit"], r["name"]) for r in read_history(path)}
    new = []
    for report in reports:
        for row in rows_of(json.loads(report.read_text()), report.name):
            key = (row["datetime"], row["commit"], row["name"])
            if key not in seen:
                seen.add(key)
                new.append(row)
    fresh = not path.is_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if fresh:
            writer.writeheader()
        writer.writerows(new)
    return len(new)


def latest(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Per (group, backend, storage, device), the row of the latest run, in first-seen
    order."""
    best: dict[tuple[str, ...], dict[str, str]] = {}
    for r in rows:
        key = (r["group"], r["backend"], r.get("storage", ""), r["device"])
        if key not in best or r["datetime"] > best[key]["datetime"]:
            best[key] = r
    return list(best.values())


def table(rows: list[dict[str, str]]) -> str:
    """Markdown: median ms per (group, backend, storage, device) of its latest run, and
    the median of the same run's torch reference in that group divided by it (where the
    torch reference is too slow to run, the same run's dense torch product stands in: the
    one in its group, or in the group of the same name with ``-dense-`` for ``-seeded-``)."""
    chosen = latest(rows)
    refs = {
        (r["datetime"], r["group"], r["device"], r.get("storage", "")): r
        for r in rows
        if r["backend"] == "torch"
    }
    dense = {k[:3]: r for k, r in refs.items() if r.get("storage") == "dense"}
    lines = [
        "| group | device | backend | storage | median ms | torch / this | threads | load "
        "| commit | date |",
        "|---|---|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in chosen:
        run = (r["datetime"], r["group"], r["device"])
        stored = (run[0], run[1].replace("-seeded-", "-dense-"), run[2])
        ref = refs.get((*run, r.get("storage", ""))) or dense.get(run) or dense.get(stored)
        ratio = f"{float(ref['median_ms']) / float(r['median_ms']):.2f}×" if ref else "—"
        commit = r["commit"] + (" (dirty)" if r["dirty"] == "True" else "")
        lines.append(
            f"| {r['group']} | {r['device']} | {r['backend']} | {r.get('storage') or '—'} "
            f"| {float(r['median_ms']):.3g} | "
            f"{ratio} | {r['threads']} | {r['load_avg_1m']} | {commit} | {r['datetime'][:10]} |"
        )
    return "\n".join(lines)


def write_readme(readme: Path, text: str) -> None:
    """Replaces what stands between the kernel-table markers of ``readme``."""
    content = readme.read_text()
    if START not in content or END not in content:
        raise SystemExit(f"{readme} has no {START} ... {END} markers")
    head, rest = content.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{text}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("append", help="add pytest-benchmark JSON reports to the history")
    a.add_argument("reports", nargs="+", type=Path)
    a.add_argument("--history", type=Path, default=HISTORY)
    t = sub.add_parser("table", help="markdown table of the latest run of each case")
    t.add_argument("--history", type=Path, default=HISTORY)
    t.add_argument("--readme", type=Path, default=None, help="write it into this README")
    args = p.parse_args(argv)
    if args.cmd == "append":
        n = append(args.reports, args.history)
        print(f"{n} new row(s) in {args.history}")
        return 0
    rows = read_history(args.history)
    if not rows:
        raise SystemExit(f"no history at {args.history}: run `append` first")
    text = table(rows)
    if args.readme:
        write_readme(args.readme, text)
        print(f"wrote the kernel table into {args.readme}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
