"""Plots with Pillow only (matplotlib is not a dependency)."""

from __future__ import annotations

import math
from pathlib import Path

__all__ = ["plot_curves"]


def plot_curves(
    path: str | Path,
    curves: dict[str, list[tuple[int, float]]],
    title: str = "",
    size: tuple[int, int] = (640, 420),
) -> Path:
    """Line plot of ``label -> [(step, value), ...]`` with a log-x axis, as PNG."""
    from PIL import Image, ImageDraw

    w, h = size
    left, right, top, bottom = 60, 20, 30, 50
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    if not curves or not all(curves.values()):
        raise ValueError("plot_curves needs at least one non-empty curve")
    n_max = max(n for v in curves.values() for n, _ in v)
    vals = [y for v in curves.values() for _, y in v if math.isfinite(y)]
    lo, hi = math.floor(min(vals)), math.ceil(max(vals))
    hi = hi if hi > lo else lo + 1
    xmax = math.log10(max(n_max, 2))

    def px(step: int, value: float) -> tuple[float, float]:
        fx = math.log10(step) / xmax
        fy = (value - lo) / (hi - lo)
        return left + fx * (w - left - right), h - bottom - fy * (h - top - bottom)

    d.rectangle([left, top, w - right, h - bottom], outline="black")
    for dec in range(0, int(xmax) + 1):
        for m in (1, 2, 5):
            s = m * 10**dec
            if s > n_max:
                break
            x, _ = px(s, lo)
            d.line([x, top, x, h - bottom], fill=(225, 225, 225))
            d.text((x - 6, h - bottom + 4), str(s), fill="black")
    step_y = max(1, math.ceil((hi - lo) / 8))
    for v in range(lo, hi + 1, step_y):
        _, y = px(1, v)
        d.line([left, y, w - right, y], fill=(225, 225, 225))
        d.text((left - 28, y - 6), str(v), fill="black")
    d.text((w // 2 - 60, h - 20), "inner step (log scale)", fill="black")
    d.text((4, top - 22), "PSNR (dB)", fill="black")
    d.text((left + 100, 8), title, fill="black")
    colours = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]
    for i, (label, v) in enumerate(curves.items()):
        pts = [px(n, y) for n, y in v if math.isfinite(y)]
        colour = colours[i % len(colours)]
        if len(pts) > 1:
            d.line(pts, fill=colour, width=2)
        ly = top + 10 + 16 * i
        d.line([left + 10, ly + 6, left + 30, ly + 6], fill=colour, width=2)
        n_last, y_last = v[-1]
        d.text((left + 36, ly), f"{label} ({y_last:.2f} dB at {n_last})", fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
