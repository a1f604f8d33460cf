"""Scores stopping rules (window W, patience P) on the runs that ``recipe_study.py run
--auto`` recorded with their PSNR and windowed-variance curves: the rule ``steps="auto"``
uses, and the others on the same runs (exploratory: chosen on the very patches they are
scored on, so an optimistic view of what tuning could give).

    python benchmarks/results/recipe_study/probes/auto_rules.py [> auto_rules.txt]
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

ROWS = Path(__file__).resolve().parent.parent / "rows.jsonl"
PATIENCES = (50, 100, 200, 400)


def stop(variance: list[float], window: int, patience: int, max_steps: int) -> tuple[int, int]:
    """(chosen step, steps run) of ES-WMV on one run's VAR_t (t = window … max_steps)."""
    best, best_t = math.inf, max_steps
    for i, v in enumerate(variance):
        t = window + i
        if v < best:
            best, best_t = v, t
        if t - best_t >= patience:
            return best_t, t
    return best_t, max_steps


def main() -> None:
    rows = [json.loads(s) for s in ROWS.read_text().splitlines() if s.strip()]
    rows = [r for r in rows if "variance" in r]
    tasks = sorted({(r["method"], r["task"]) for r in rows})
    print("| method | task | window | patience | patches | gap to oracle (dB) | steps run |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for method, task in tasks:
        rs = [r for r in rows if (r["method"], r["task"]) == (method, task)]
        for window in sorted({int(w) for r in rs for w in r["variance"]}):
            for patience in PATIENCES:
                gaps, runs = [], []
                for r in rs:
                    chosen, ran = stop(r["variance"][str(window)], window, patience, r["max_steps"])
                    gaps.append(r["psnr"]["oracle"] - r["curve"][chosen - 1])
                    runs.append(ran)
                g, n = np.array(gaps), np.array(runs)
                se = g.std(ddof=1) / math.sqrt(len(g)) if len(g) > 1 else float("nan")
                print(
                    f"| {method} | {task} | {window} | {patience} | {len(rs)} | "
                    f"{g.mean():.2f} ± {se:.2f} | {n.mean():.0f} |"
                )


if __name__ == "__main__":
    main()
