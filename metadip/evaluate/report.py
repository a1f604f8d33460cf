"""The report of an evaluation, rebuilt from its rows: ``table.md`` (the layout of the
paper's Tables 1-3), ``convergence.png`` (PSNR vs inner step, log-x: Fig. 2) and
``grid_<task>.png`` (ground truth, input, every method with its PSNR: Figs. 3-5)."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from metadip import io, plots
from metadip.evaluate.methods import METHODS, EvalConfig
from metadip.metrics import psnr
from metadip.tasks import parse_task

__all__ = ["COLORS", "image_stem", "plot_convergence", "slug", "write_grid", "write_table"]

COLORS = {
    "metadip": (214, 39, 40),
    "dip50": (31, 119, 180),
    "dip1000": (44, 160, 44),
    "educated": (255, 127, 14),
    "decoder": (23, 190, 207),
    "metasiren": (148, 103, 189),
    "meta-classical": (188, 189, 34),
    "solver": (0, 0, 128),
    "solver-converged": (100, 149, 237),
    "bm3d": (140, 86, 75),
    "admm-bm3d": (227, 119, 194),
    "deepinv-dip": (127, 127, 127),
}


def slug(spec: str) -> str:
    """A task spec as a file-name part: ``cs:0.25`` -> ``cs_0p25``."""
    return spec.replace(":", "_").replace(".", "p")


SECTIONS = (
    ("Denoising (paper Table 1)", "denoise"),
    ("Compressive sensing, σ = 25 (paper Table 2)", "cs"),
    ("Compressive phase retrieval, σ = 25 (paper Table 3)", "pr"),
    (
        "Extra tasks (σ = 25): inpainting (`inpaint:R`: a fraction R of the pixels observed, "
        "half by default; `inpaint:box`: the centre ninth missing), Gaussian deblurring",
        None,
    ),
)


def _summary(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["task"], r["method"])].append(r)
    out = {}
    for key, rs in groups.items():
        ok = [r for r in rs if r.get("status") == "ok"]
        out[key] = {
            "n": len(ok),
            "psnr": float(np.mean([r["psnr"] for r in ok])) if ok else math.nan,
            "seconds": float(np.mean([r["seconds"] for r in ok])) if ok else math.nan,
            "status": "ok"
            if ok
            else ("skipped" if all(r.get("status") == "skipped" for r in rs) else "error"),
            "error": next((r.get("error") for r in rs if r.get("status") == "error"), None),
        }
    return out


def write_table(rows: list[dict[str, Any]], path: str | Path, cfg: EvalConfig) -> Path:
    """Mean PSNR (dB) and mean warm time (s) per task and method, one table per task
    family as in the paper; ``—`` = not applicable, ``error`` = see the notes."""
    summ = _summary(rows)
    n_patches = len({r["patch"] for r in rows})
    devices = sorted({r["device"] for r in rows if "device" in r})
    lines = [
        "# metadip eval",
        "",
        (
            f"{n_patches} validation patch(es) of {cfg.size}×{cfg.size} from `{cfg.images}`; "
            if cfg.resolved_split == "val"
            else f"{n_patches} image(s) of `{cfg.images}`, centre crops of {cfg.size}×{cfg.size}; "
        )
        + "PSNR in dB (mean over patches), time in seconds (mean, warm, reconstruction only). "
        "A count in brackets means fewer patches finished for that cell.",
        f"Device: {'; '.join(devices) or 'n/a'}.",
        "",
    ]
    if cfg.samples > 1:
        lines[-1:-1] = [
            f"DIP-type methods: posterior mean of {cfg.samples} Langevin chains "
            "(`--samples`); their std maps are in the grids."
        ]
    errors: dict[str, str] = {}
    methods = [m for m in METHODS if m in cfg.methods]
    for title, family in SECTIONS:
        tasks = [
            t
            for t in cfg.tasks
            if (parse_task(t).task == family)
            or (family is None and parse_task(t).task in ("inpaint", "blur"))
        ]
        if not tasks:
            continue
        head = "| method | " + " | ".join(f"{t} PSNR | {t} time" for t in tasks) + " |"
        lines += [f"## {title}", "", head, "|---" * (1 + 2 * len(tasks)) + "|"]
        for m in methods:
            cells = []
            for t in tasks:
                s = summ.get((t, m))
                if s is None:
                    cells += ["not run", ""]
                elif s["status"] == "skipped":
                    cells += ["—", "—"]
                elif s["status"] == "error":
                    cells += ["error", ""]
                    errors.setdefault(m, s["error"] or "")
                else:
                    count = "" if s["n"] >= n_patches else f" ({s['n']})"
                    cells += [f"{s['psnr']:.2f}{count}", f"{s['seconds']:.2f}"]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    tuned = [r for r in rows if r.get("method") == "admm-bm3d" and r.get("admm")]
    if tuned:
        per_task = {r["task"]: r["admm"] for r in tuned}
        lines += [
            "PnP-ADMM settings (grid-searched on the tuning split, then frozen): "
            + "; ".join(
                f"{t}: σ_d {p['strength']:g}, ρ {p['rho']:g}, {p['iters']} it"
                for t, p in per_task.items()
            ),
            "",
        ]
    if errors:
        lines += ["Errors:", ""] + [f"- {m}: {e}" for m, e in errors.items()] + [""]
    path = Path(path)
    path.write_text("\n".join(lines))
    return path


def plot_convergence(rows: list[dict[str, Any]], path: str | Path) -> Path | None:
    """PSNR vs inner step (log x), one panel per task, one line per method (mean over
    patches at each sampled step). Returns None when no row has a curve."""
    points: dict[str, dict[str, dict[int, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for r in rows:
        for step, value in r.get("curve") or []:
            if math.isfinite(value):
                points[r["task"]][r["method"]][int(step)].append(float(value))
    if not points:
        return None
    panels = {
        f"{task}: PSNR (dB) vs inner step": {
            m: sorted((s, float(np.mean(v))) for s, v in pts.items()) for m, pts in by.items()
        }
        for task, by in points.items()
    }
    return plots.plot_panels(path, panels, COLORS)


def image_stem(patch: str, method: str, samples: int) -> str:
    """The file stem of a method's image on a patch (``_k<K>`` for posterior runs)."""
    return f"{patch}_{method}" + (f"_k{samples}" if samples > 1 else "")


def write_grid(
    rows: list[dict[str, Any]], out: Path, spec: str, patch: str, samples: int = 1
) -> Path | None:
    """``OUT/grid_<task>.png``: ground truth, the input view, then every method that
    finished on ``patch`` with its PSNR, each followed by its std map when it ran
    ``samples`` > 1 chains (white = the ``std_white`` of its row)."""
    folder = out / "images" / slug(spec)
    truth, view = folder / f"{patch}_truth.png", folder / f"{patch}_input.png"
    if not truth.is_file():
        return None
    x = io.load_image(truth)
    panels = [("ground truth", x)]
    if view.is_file():
        v = io.load_image(view)
        panels.append((f"input {psnr(v, x):.1f} dB", v))
    for r in rows:
        if r["task"] != spec or r["patch"] != patch or r.get("status") != "ok":
            continue
        stem = folder / image_stem(patch, r["method"], samples)
        f, std = stem.with_name(stem.name + ".png"), stem.with_name(stem.name + "_std.png")
        if f.is_file():
            panels.append((f"{r['method']} {r['psnr']:.1f} dB", io.load_image(f)))
        if std.is_file() and "std_white" in r:
            panels.append((f"std (0-{r['std_white']:.3f})", io.load_image(std)))
    return io.save_grid(out / f"grid_{slug(spec)}.png", panels)
