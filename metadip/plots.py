"""PSNR-vs-step plots on a log-x axis, with Pillow only (matplotlib is not a dependency).

One panel drawer serves both pictures: ``plot_curves`` (one panel: training's
validation curves) and ``plot_panels`` (a grid of panels: the evaluation's convergence
plot, one panel per task).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["plot_curves", "plot_panels"]

Curve = list[tuple[int, float]]
RGB = tuple[int, int, int]
PALETTE: tuple[RGB, ...] = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189))


def _panel(
    d: Any,
    frame: tuple[int, int, int, int],
    curves: dict[str, Curve],
    colours: dict[str, RGB],
    title: str,
    x_max: int,
) -> None:
    """One log-x panel inside ``frame`` = (left, top, right, bottom) pixels: grid lines at
    1, 2, 5 × 10^k steps, the PSNR axis, one line per curve and a legend with each
    curve's last value."""
    left, top, right, bottom = frame
    vals = [y for v in curves.values() for _, y in v if math.isfinite(y)]
    lo, hi = math.floor(min(vals)), math.ceil(max(vals))
    hi = hi if hi > lo else lo + 1
    xmax = math.log10(max(x_max, 2))

    def px(step: int, value: float) -> tuple[float, float]:
        fx = math.log10(step) / xmax
        fy = (value - lo) / (hi - lo)
        return left + fx * (right - left), bottom - fy * (bottom - top)

    d.rectangle([left, top, right, bottom], outline="black")
    for dec in range(0, int(xmax) + 1):
        for m in (1, 2, 5):
            s = m * 10**dec
            if s > x_max:
                break
            x, _ = px(s, lo)
            d.line([x, top, x, bottom], fill=(225, 225, 225))
            d.text((x - 6, bottom + 4), str(s), fill="black")
    for v in range(lo, hi + 1, max(1, math.ceil((hi - lo) / 8))):
        _, y = px(1, v)
        d.line([left, y, right, y], fill=(225, 225, 225))
        d.text((left - 28, y - 6), str(v), fill="black")
    d.text((left, top - 20), title, fill="black")
    for i, (label, v) in enumerate(curves.items()):
        pts = [px(n, y) for n, y in v if math.isfinite(y)]
        colour = colours[label]
        if len(pts) > 1:
            d.line(pts, fill=colour, width=2)
        for cx, cy in pts:
            d.ellipse([cx - 2, cy - 2, cx + 2, cy + 2], fill=colour)
        ly = top + 10 + 14 * i
        d.line([left + 10, ly + 6, left + 30, ly + 6], fill=colour, width=2)
        n_last, y_last = v[-1]
        d.text((left + 36, ly), f"{label} ({y_last:.2f} dB at {n_last})", fill="black")


def _colours(labels: list[str], given: dict[str, RGB] | None) -> dict[str, RGB]:
    given = given or {}
    return {k: given.get(k, PALETTE[i % len(PALETTE)]) for i, k in enumerate(labels)}


def _check(curves: dict[str, Curve], what: str) -> None:
    if not curves or not all(curves.values()):
        raise ValueError(f"{what} needs at least one non-empty curve, got {curves!r}")
    if not any(math.isfinite(y) for v in curves.values() for _, y in v):
        raise ValueError(f"{what}: every value is NaN or infinite")


def _save(img: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def plot_curves(
    path: str | Path,
    curves: dict[str, Curve],
    title: str = "",
    size: tuple[int, int] = (640, 420),
    colours: dict[str, RGB] | None = None,
    x_label: str = "inner step (log scale)",
) -> Path:
    """Line plot of ``label -> [(step, value), ...]`` with a log-x axis, as PNG."""
    from PIL import Image, ImageDraw

    _check(curves, "plot_curves")
    w, h = size
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    x_max = max(n for v in curves.values() for n, _ in v)
    _panel(d, (60, 30, w - 20, h - 50), curves, _colours(list(curves), colours), title, x_max)
    d.text((w // 2 - 60, h - 20), x_label, fill="black")
    return _save(img, path)


def plot_panels(
    path: str | Path,
    panels: dict[str, dict[str, Curve]],
    colours: dict[str, RGB] | None = None,
    size: tuple[int, int] = (360, 260),
    cols: int = 4,
) -> Path:
    """A grid of log-x panels, ``title -> {label: curve}``, at most ``cols`` per row and
    one shared x range so that speeds compare across panels; as PNG."""
    from PIL import Image, ImageDraw

    if not panels:
        raise ValueError("plot_panels needs at least one panel")
    for title, curves in panels.items():
        _check(curves, f"plot_panels panel {title!r}")
    pw, ph = size
    cols = min(cols, len(panels))
    rows = math.ceil(len(panels) / cols)
    img = Image.new("RGB", (cols * pw, rows * ph), "white")
    d = ImageDraw.Draw(img)
    x_max = max(10, *(n for c in panels.values() for v in c.values() for n, _ in v))
    labels = list(dict.fromkeys(k for c in panels.values() for k in c))
    palette = _colours(labels, colours)
    for i, (title, curves) in enumerate(panels.items()):
        ox, oy = (i % cols) * pw, (i // cols) * ph
        frame = (ox + 44, oy + 26, ox + pw - 12, oy + ph - 36)
        _panel(d, frame, curves, palette, title, x_max)
    return _save(img, path)
