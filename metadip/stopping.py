"""Automatic stopping without ground truth: the windowed moving variance of the iterates
(ES-WMV, Wang et al., "Early stopping for deep image prior").

A DIP fit first reconstructs the image, then starts fitting the noise; the iterates
``x_t = f_θt(z)`` change least around the peak. With a window of the last W iterates,
``VAR_t = mean_w ‖x_w − x̄‖² / n`` over the window; the fit stops when ``VAR`` has not
reached a new minimum for ``patience`` steps, and the image at the minimum is returned.
Every problem of a batch is watched on its own; the fit ends when all have stopped.

Where the noise level σ is known (``discrepancy_floor``: denoising), minima count only
once the data fit has come down to ``DISCREPANCY · σ²`` (Morozov's discrepancy
principle): before that the image is still forming, and a lull in its change is not the
peak. On denoising this took the gap to the best step from 2.0 to 0.55 dB on held-out
patches (``benchmarks/stopping_study.py``, ``benchmarks/results/recipe_study/stopping.md``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "DISCREPANCY",
    "WindowedVariance",
    "default_window",
    "discrepancy_floor",
    "stopped_result",
    "watcher_for",
    "watching",
]

# The data-fit level, in units of σ², from which variance minima count (chosen on the
# tuning patches, benchmarks/results/recipe_study/stopping.md).
DISCREPANCY = 1.1
# Tasks where the gate was measured to pay; CS and PR keep the plain rule (within 1 dB
# of the best step there already, and their data fit was not recorded).
GATED_TASKS = ("denoise",)


def default_window(max_steps: int, gated: bool = False) -> tuple[int, int]:
    """``(window, patience)`` for a run of at most ``max_steps``: 1/20 and 1/5 of it, at
    least 5 and 20 steps; behind the discrepancy gate (``gated``) a window of 1/100 (at
    least 5), the one the tuning patches chose there."""
    window = max(5, max_steps // 100) if gated else max(5, max_steps // 20)
    return window, max(20, max_steps // 5)


def discrepancy_floor(op: Any, batch: int) -> list[float] | None:
    """Per problem, ``DISCREPANCY · σ²`` for a denoising operator with noise (one value per
    operator of a ``Stacked`` batch), else None (no gate)."""
    ops = getattr(op, "ops", None) or [op] * batch
    if any(getattr(o, "task", None) not in GATED_TASKS or not (o.sigma or 0) > 0 for o in ops):
        return None
    return [DISCREPANCY * float(o.sigma) ** 2 for o in ops]


def watcher_for(op: Any, batch: int, max_steps: int) -> WindowedVariance:
    """The watcher ``steps="auto"`` uses for ``batch`` problems of ``op``: gated ES-WMV
    where ``discrepancy_floor`` gives a floor, plain ES-WMV otherwise."""
    floor = discrepancy_floor(op, batch)
    return WindowedVariance(*default_window(max_steps, gated=floor is not None), floor=floor)


class WindowedVariance:
    """Watches the iterates ``(B, C, H, W)`` of B problems, one call per step.

    ``update(images, step)`` feeds step ``step``'s images; ``done`` is true once every
    problem has stopped; ``best_images`` ``(B, C, H, W)`` and ``best_steps`` hold, per
    problem, the image and the (1-based) step of the lowest windowed variance so far.
    ``floor``: one data-fit level per problem (``discrepancy_floor``); then ``update``
    also takes each problem's data fit, and a problem's minima (and its patience) count
    only from the first step its fit was at or below its floor.
    """

    def __init__(self, window: int, patience: int, floor: list[float] | None = None):
        if isinstance(window, bool) or not isinstance(window, int) or window < 2:
            raise ValueError(f"window must be an integer >= 2, got {window!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be an integer >= 1, got {patience!r}")
        if floor is not None and not all(f >= 0 for f in floor):
            raise ValueError(f"floor must hold data-fit levels >= 0, got {floor}")
        self.window, self.patience = window, patience
        # The gate: problem b counts minima once its data fit has been <= floor[b].
        self.floor = None if floor is None else torch.tensor(floor, dtype=torch.float64)
        self._open: Tensor | None = None
        self._recent: deque[Tensor] = deque(maxlen=window)
        self.best_images: Tensor | None = None
        self.best_steps: list[int] = []
        self._best_var: Tensor | None = None
        self._stopped: Tensor | None = None

    @property
    def done(self) -> bool:
        return self._stopped is not None and bool(self._stopped.all())

    @property
    def stopped(self) -> list[bool]:
        return [] if self._stopped is None else self._stopped.tolist()

    @property
    def found(self) -> list[bool]:
        """Per problem: whether a windowed variance was ever computed (the window filled)."""
        if self._best_var is None:
            return []
        return torch.isfinite(self._best_var).tolist()

    def update(self, images: Tensor, step: int, losses: list[float] | None = None) -> None:
        """Feeds step ``step``'s images ``(B, C, H, W)`` and, with a floor, each problem's
        data fit ``losses`` (B values)."""
        images = images.detach()
        self._gate(losses, images.shape[0])
        if self.best_images is None:
            self.best_images = images.clone()
            self._start(images.shape[0], step)
        self._recent.append(images)
        if len(self._recent) < self.window:
            return
        stack = torch.stack(list(self._recent))  # (W, B, C, H, W)
        var = (stack - stack.mean(dim=0)).pow(2).flatten(2).mean(dim=2).mean(dim=0)
        self.observe(var, step, images)

    def observe(self, var: Tensor, step: int, images: Tensor | None = None) -> None:
        """The rule alone: feeds step ``step``'s windowed variance ``(B,)``, and its images
        ``(B, C, H, W)`` to keep when they are a problem's best so far (``update`` computes
        the variance; a study replays recorded ones without images)."""
        var = var.detach().to(torch.float64).cpu()
        if self._best_var is None:
            self._start(var.shape[0], step)
        closed = torch.zeros_like(self._stopped) if self._open is None else ~self._open
        for b in closed.nonzero().flatten().tolist():
            self.best_steps[b] = step  # the patience runs from the gate's opening
        better = (var < self._best_var) & ~self._stopped & ~closed
        for b in better.nonzero().flatten().tolist():
            self._best_var[b] = var[b]
            self.best_steps[b] = step
            if images is not None and self.best_images is not None:
                self.best_images[b] = images[b]
        waited = torch.tensor([step - s for s in self.best_steps])
        self._stopped |= waited >= self.patience

    def _gate(self, losses: list[float] | None, batch: int) -> None:
        if self.floor is None:
            return
        if losses is None or len(losses) != batch or len(self.floor) != batch:
            raise ValueError(
                f"a watcher with a floor needs each problem's data fit: {len(self.floor)} "
                f"floors, {batch} problems, got losses {losses}"
            )
        reached = torch.tensor(losses, dtype=torch.float64) <= self.floor
        self._open = reached if self._open is None else self._open | reached

    def _start(self, batch: int, step: int) -> None:
        self.best_steps = [step] * batch
        self._best_var = torch.full((batch,), float("inf"), dtype=torch.float64)
        self._stopped = torch.zeros(batch, dtype=torch.bool)


def watching(watcher: WindowedVariance, callback: Any) -> Callable[[Any], bool]:
    """A fit callback that feeds the iterates (``StepInfo.image()``) to ``watcher``, after
    the caller's ``callback``, and ends the fit once every problem has stopped."""

    def call(info: Any) -> bool:
        if callback is not None:
            callback(info)
        watcher.update(info.image(), info.step + 1, info.losses)
        return watcher.done

    return call


def stopped_result(res: Any, watcher: WindowedVariance) -> tuple[Any, list[int]]:
    """A fit's result (``metadip.loop.FitResult``) with each problem's image at its
    detected step, and those steps; a problem whose window never filled keeps its final
    image and the last step."""
    run = len(res.losses[0]) if res.losses else 0
    image = res.image.clone()
    at = []
    for b in range(image.shape[0]):
        found = watcher.best_images is not None and watcher.found[b]
        if found:
            image[b] = watcher.best_images[b].to(image.dtype)
        at.append(watcher.best_steps[b] if found else run)
    return replace(res, image=image), at
