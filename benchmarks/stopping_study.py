"""Stopping rules scored offline on recorded fits: which rule ``steps="auto"`` should use.

    python benchmarks/recipe_study.py run dip:0.01:ema denoise:25 --auto 1000 \\
        --list tuning.tsv --patches 8 --rows stopping.jsonl      # and the validation list
    python benchmarks/stopping_study.py [--rows stopping.jsonl] [--out stopping.md]

Each ``--auto`` row holds, per step t of one fit, the PSNR of the iterate, the windowed
variance ``VAR_t`` for windows 10 / 25 / 50 / 100 (``recipe_study.WINDOWS``) and the data
fit ``L_t`` with the operator's noise level σ. A rule picks a step from these alone (no
ground truth); its score is the PSNR gap to the oracle (the best step of the same fit)
and the steps it ran. Rules:

- ``wmv:W:P`` (ES-WMV, Wang et al.): the step of the lowest ``VAR_t``; stop once it has
  not moved for P steps (``metadip.stopping.WindowedVariance``).
- ``discrepancy:τ`` (Morozov): the first step whose data fit is at most τσ², where the
  fit has reached the noise; a fit that never gets there runs to the end.
- ``wmv+discrepancy:W:P:τ``: ES-WMV counted only from the discrepancy step on.

Rules are chosen on the tuning patches (``train*``) and reported on the validation ones
(``val*``), paired, mean ± standard error.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from metadip.stopping import DISCREPANCY, GATED_TASKS, WindowedVariance, default_window

OUT = Path(__file__).resolve().parent / "results" / "recipe_study"
PATIENCES = (20, 50, 100, 200, 300, 500)
TAUS = (0.8, 0.9, 1.0, 1.1, 1.2)


def wmv(variance: list[float], window: int, patience: int, start: int = 1) -> tuple[int, int]:
    """``(chosen, ran)`` steps (1-based) of ES-WMV on ``VAR_t`` (index i is step window + i),
    counting minima only from step ``start`` on: ``metadip.stopping.WindowedVariance``'s
    rule, replayed."""
    watcher = WindowedVariance(window, patience)
    last = window + len(variance) - 1
    for i, v in enumerate(variance):
        t = window + i
        if t < start:
            continue
        watcher.observe(torch.tensor([v]), t)
        if watcher.done:
            return watcher.best_steps[0], t
    return (watcher.best_steps[0] if watcher.found else last), last


def discrepancy(loss: list[float], sigma: float, tau: float) -> int:
    """The first step (1-based) whose data fit is at most ``tau σ²``, else the last."""
    for t, v in enumerate(loss, start=1):
        if v <= tau * sigma**2:
            return t
    return len(loss)


def score(row: dict, rule: str) -> tuple[float, int, int]:
    """``(gap to the oracle in dB, chosen step, steps run)`` of ``rule`` on one row."""
    kind, *args = rule.split(":")
    curve = row["curve"]
    if kind == "wmv":
        w, p = int(args[0]), int(args[1])
        chosen, ran = wmv(row["variance"][str(w)], w, p)
    elif kind == "discrepancy":
        chosen = ran = discrepancy(row["loss"], row["sigma"], float(args[0]))
    elif kind == "wmv+discrepancy":
        w, p, tau = int(args[0]), int(args[1]), float(args[2])
        start = discrepancy(row["loss"], row["sigma"], tau)
        chosen, ran = wmv(row["variance"][str(w)], w, p, start)
    else:
        raise ValueError(f"unknown rule {rule!r}")
    return max(curve) - curve[chosen - 1], chosen, ran


def rules(windows: list[int]) -> list[str]:
    out = [f"wmv:{w}:{p}" for w in windows for p in PATIENCES]
    out += [f"discrepancy:{t}" for t in TAUS]
    out += [f"wmv+discrepancy:{w}:{p}:{t}" for w in windows for p in (50, 100, 200) for t in TAUS]
    return out


def summary(rows: list[dict], rule: str) -> dict:
    scores = [score(r, rule) for r in rows]
    gaps = [s[0] for s in scores]
    n = len(gaps)
    mean = sum(gaps) / n
    se = math.sqrt(sum((g - mean) ** 2 for g in gaps) / (n - 1) / n) if n > 1 else 0.0
    return {
        "gap": mean,
        "se": se,
        "chosen": sum(s[1] for s in scores) / n,
        "ran": sum(s[2] for s in scores) / n,
        "early": sum(s[2] < len(r["curve"]) for s, r in zip(scores, rows, strict=True)),
        "n": n,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default="stopping.jsonl")
    ap.add_argument("--out", default=None, help="also write the tables to this file")
    ap.add_argument("--top", type=int, default=8, help="rules shown per task")
    args = ap.parse_args(argv)
    rows = [json.loads(s) for s in (OUT / args.rows).read_text().splitlines() if s.strip()]
    rows = [r for r in rows if "curve" in r and "loss" in r]
    lines: list[str] = []
    for task in sorted({r["task"] for r in rows}):
        tune = [r for r in rows if r["task"] == task and r["patch"].startswith("train")]
        val = [r for r in rows if r["task"] == task and r["patch"].startswith("val")]
        if not tune or not val:
            continue
        windows = sorted(int(w) for w in tune[0]["variance"])
        ranked = sorted(rules(windows), key=lambda rl: summary(tune, rl)["gap"])
        shown = ranked[: args.top]
        # metadip.stopping's rules at max_steps = 1000: ES-WMV with default_window(1000),
        # gated by the discrepancy for GATED_TASKS.
        plain = "wmv:{}:{}".format(*default_window(1000))
        gated = "wmv+discrepancy:{}:{}:{}".format(*default_window(1000, True), DISCREPANCY)
        current = gated if task.split(":")[0] in GATED_TASKS else plain
        shown += [rl for rl in (plain, gated) if rl not in shown]
        lines += [
            f"### {task} ({len(tune)} tuning, {len(val)} validation patches, max 1000 steps)",
            "",
            "| rule | tuning gap (dB) | validation gap (dB) | validation chosen / run "
            "steps | stopped early |",
            "|---|---:|---:|---:|---:|",
        ]
        for rl in shown:
            t, v = summary(tune, rl), summary(val, rl)
            mark = " (steps='auto')" if rl == current else ""
            lines.append(
                f"| {rl}{mark} | {t['gap']:.2f} ± "
                f"{t['se']:.2f} | {v['gap']:.2f} ± {v['se']:.2f} | {v['chosen']:.0f} / "
                f"{v['ran']:.0f} | {v['early']} of {v['n']} |"
            )
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.out:
        (OUT / args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
