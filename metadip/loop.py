"""The fitting loop around ``inner.step``: per-problem restores on the device, callbacks,
progress, PSNR against a known image, and the host-side result.

``run_loop`` keeps everything on the device (so it can be captured in a CUDA graph);
``finish`` turns its ``Trace`` into a ``FitResult``; ``fit`` is both, with a progress bar.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from metadip.inner import (
    Hyper,
    Params,
    State,
    ensemble_output,
    init_state,
    per_item,
    step,
)
from metadip.losses import sure_weights
from metadip.rules import get_rule

__all__ = ["FitResult", "StepInfo", "Trace", "finish", "fit", "result", "run_loop"]

# A vanilla-DIP step whose loss jumps by more than this factor (5 dB) is undone,
# as in the original DIP code.
BACKTRACK_FACTOR = 10 ** (5 / 10)


@dataclass
class StepInfo:
    """What a callback sees after each step in which at least one problem was accepted.

    ``loss``: the loss at the step's incoming parameters (the mean over a batch);
    ``losses``: one per problem; ``first``: the index of the first problem of this
    pass in the caller's batch (``reconstruct`` fits a batch in passes of ``batch_size``).
    """

    step: int
    loss: float
    params: Params
    hyper: Hyper
    losses: list[float] = field(default_factory=list)
    first: int = 0
    _image: Tensor | None = field(default=None, repr=False)

    def image(self) -> Tensor:
        """The current image ``f_θ(z)`` ``(B, C, H, W)``, or its self-ensemble when the fit
        has one (``hyper.ensemble`` forward passes, done once per step however many callers
        ask; call only when needed)."""
        if self._image is None:
            with torch.no_grad():
                self._image = ensemble_output(self.params, self.hyper)
        return self._image


@dataclass
class FitResult:
    """``image``: ``(B, C, H, W)``; ``losses`` / ``restored``: one list per problem;
    ``psnr``: per problem, the PSNR after each step against ``x_true`` (None without)."""

    image: Tensor
    losses: list[list[float]]
    restored: list[list[int]]
    psnr: list[list[float]] | None = None


def result(params: Params, state: State, hyper: Hyper) -> Tensor:
    """The reconstruction: the output average when the rule keeps one, else f_θ(z) (its
    geometric self-ensemble when ``hyper.ensemble > 1``)."""
    if hyper.ema > 0 and state["ema"] is not None:
        acc, norm = state["ema"]
        return acc / norm
    return ensemble_output(params, hyper)


def _select(take: Tensor, new: Any, old: Any, groups: int, batch_dim: bool = False) -> Any:
    """Per problem, ``new`` where ``take`` ``(B,)`` is true and ``old`` elsewhere, through
    the nesting of params / state (``old`` None stands for zeros). Parameter-like
    tensors follow ``groups``; the output average always has the batch in dim 0."""
    if isinstance(new, dict):
        return {
            k: _select(take, v, None if old is None else old[k], groups, batch_dim or k == "ema")
            for k, v in new.items()
        }
    if isinstance(new, tuple):
        olds = (None,) * len(new) if old is None else old
        return tuple(_select(take, a, b, groups, batch_dim) for a, b in zip(new, olds, strict=True))
    if new is None:
        return old
    if old is None:
        old = torch.zeros_like(new)
    mask = per_item(take, new, new.shape[0] if batch_dim else groups)
    return torch.where(mask, new, old)


@dataclass
class Trace:
    """A finished loop on the device, before any host-side check: the final and the last
    good parameters and state, and the ``(B, T)`` losses and restore flags."""

    params: Params
    state: State
    good_params: Params
    good_state: State
    hyper: Hyper
    losses: Tensor
    bad: Tensor
    psnr: Tensor | None = None


def run_loop(
    params: Params,
    y: Tensor,
    op: Any,
    hyper: Hyper,
    steps: int,
    *,
    callback: Callable[[StepInfo], None] | None = None,
    bar: Any = None,
    x_true: Tensor | None = None,
    host_checks: bool | None = None,
) -> Trace:
    """The fitting loop with per-problem restores done on the device (``torch.where``):
    no host synchronization unless ``callback`` or a progress ``bar`` is given, so it can
    be captured in a CUDA graph. A ``callback`` that returns True stops the loop.
    ``x_true`` ``(B, C, H, W)``: after each step, the PSNR of the image the fit would
    return then (clamped to [0, 1]) is recorded on the device (one more forward pass).
    ``host_checks`` (default: on a CPU, where reading a flag costs nothing and nothing is
    captured): a step that every problem accepts is taken as it is, without the selects,
    which for a narrow network are hundreds of small operations a step. The result is the
    same either way."""
    if host_checks is None:
        host_checks = y.device.type == "cpu"
    b = y.shape[0]
    state = init_state(params, hyper)
    good_params, good_state = params, state
    last = y.new_full((b,), math.inf)
    scale = y.new_ones(b)
    hyper = replace(hyper, lr_scale=scale)
    backtrack = BACKTRACK_FACTOR if get_rule(hyper.rule).backtrack else math.inf
    # A SURE fit moves the data fit away from y, toward σ² per pixel, so only a rise past
    # the factor times max(last, σ²) is a divergence; from an identity start (data fit 0)
    # every step would otherwise be undone.
    floor = y.new_zeros(b)
    if hyper.loss == "sure":
        floor = (hyper.sure if hyper.sure is not None else sure_weights(op, y))[1]
    loss_rows: list[Tensor] = []
    bad_rows: list[Tensor] = []
    psnr_rows: list[Tensor] = []
    for t in range(steps):
        new_params, new_state, loss = step(params, state, y, op, hyper, t)
        bad = ~torch.isfinite(loss) | (loss > backtrack * torch.maximum(last, floor))
        ok = ~bad
        loss_rows.append(loss)
        bad_rows.append(bad)
        if host_checks and not bool(bad.any()):
            good_params, good_state, last = params, state, loss
            params, state = new_params, new_state
        else:
            # Accepted problems move on (their incoming params become the last good ones);
            # the others go back to their last good params with half the step size.
            good_params = _select(ok, params, good_params, hyper.groups)
            good_state = _select(ok, state, good_state, hyper.groups)
            last = torch.where(ok, loss, last)
            params = _select(ok, new_params, good_params, hyper.groups)
            state = _select(ok, new_state, good_state, hyper.groups)
            scale = torch.where(ok, scale, 0.5 * scale)
            hyper = replace(hyper, lr_scale=scale)
        if x_true is not None:
            psnr_rows.append(_psnr(params, state, hyper, x_true))
        if bar is not None:
            bar.update(1)
            if t % 10 == 9 or t == steps - 1:
                bar.set_postfix(loss=f"{float(loss.mean()):.3e}")
        if callback is not None:
            values, flags = loss.tolist(), bad.tolist()
            # A callback that returns True ends the fit after this step (automatic stopping).
            if not all(flags) and callback(StepInfo(t, sum(values) / b, params, hyper, values)):
                break
    empty = y.new_zeros(b, 0)
    return Trace(
        params,
        state,
        good_params,
        good_state,
        hyper,
        torch.stack(loss_rows, dim=1) if loss_rows else empty,
        torch.stack(bad_rows, dim=1) if bad_rows else empty.bool(),
        None if x_true is None else torch.stack(psnr_rows, dim=1) if psnr_rows else empty,
    )


def _psnr(params: Params, state: State, hyper: Hyper, x_true: Tensor) -> Tensor:
    """Per problem ``10 log10(1 / mse)`` of the fit's current image clamped to [0, 1],
    ``(B,)``."""
    with torch.no_grad():
        image = result(params, state, hyper)
        mse = (image.clamp(0, 1) - x_true).pow(2).flatten(1).mean(dim=1)
        return 10 * torch.log10(1 / mse.clamp_min(1e-20))


def finish(trace: Trace, image: Tensor | None = None) -> FitResult:
    """The host side of a fit: the image (the last good parameters' for a problem whose
    final image is not finite), losses and restore steps as lists."""
    with torch.no_grad():
        if image is None:
            image = result(trace.params, trace.state, trace.hyper)
        finite = torch.isfinite(image).flatten(1).all(dim=1)
        if not bool(finite.all()):
            fallback = result(trace.good_params, trace.good_state, trace.hyper)
            image = torch.where(finite.view(-1, 1, 1, 1), image, fallback)
        if not bool(torch.isfinite(image).all()):
            raise FloatingPointError(
                "fitting produced no finite image even from the last good parameters; "
                "check the operator and the measurement scale"
            )
    steps = trace.losses.shape[1]
    restored = [[t for t, f in enumerate(row) if f] for row in trace.bad.tolist()]
    for i, ok in enumerate(finite.tolist()):
        if not ok:
            restored[i].append(steps)
    psnr = None if trace.psnr is None else trace.psnr.tolist()
    return FitResult(image.detach(), trace.losses.tolist(), restored, psnr)


def fit(
    params: Params,
    y: Tensor,
    op: Any,
    hyper: Hyper,
    steps: int,
    *,
    callback: Callable[[StepInfo], None] | None = None,
    progress: bool = False,
    desc: str = "fitting",
    x_true: Tensor | None = None,
) -> FitResult:
    """Runs ``steps`` steps from ``params`` on ``y`` ``(B, *out_shape)``.

    A non-finite loss (or, for vanilla DIP, a loss jump over 5 dB) sends that problem
    back to its last good parameters with half the step size; the step indices where
    that happened are in ``restored``.
    """
    b = y.shape[0]
    if hyper.groups != b:
        raise ValueError(
            f"y holds {b} problems but the parameters are for {hyper.groups}; "
            "use prepare(..., batch=B) for B problems"
        )
    bar = tqdm(total=steps, desc=desc, leave=False) if progress else None
    try:
        trace = run_loop(params, y, op, hyper, steps, callback=callback, bar=bar, x_true=x_true)
    finally:
        if bar is not None:
            bar.close()
    return finish(trace)
