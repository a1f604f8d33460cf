"""``metadip.reconstruct``: validate the input, fit, and hand the image back in the caller's
array type."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metadip.init import MetaInit, load_init
from metadip.inner import StepInfo, fit, prepare
from metadip.operators import Operator, as_operator

__all__ = ["Reconstruction", "reconstruct"]


@dataclass
class Reconstruction:
    """The result of ``reconstruct``.

    ``image``: ``op.in_shape`` (or ``(B, *op.in_shape)`` for a batch of
    measurements), same array type, device and dtype as ``y``. ``losses``: the
    loss at each step (one list per batch item for a batch). ``restored``: step
    indices where a non-finite or exploding loss made the fit go back to the last
    good parameters with half the step size (empty when that never happened).
    """

    image: Any
    losses: list[float] | list[list[float]]
    steps: int
    seconds: float
    device: torch.device
    restored: list[int] | list[list[int]] = field(default_factory=list)
    init: str = ""


def _as_tensor(y: Any) -> tuple[Tensor, Callable[[Tensor], Any]]:
    """y as a torch tensor (zero-copy where possible) and a function converting results back."""
    if isinstance(y, Tensor):
        return y, lambda t: t.to(device=y.device, dtype=y.dtype)
    if isinstance(y, np.ndarray):
        if y.dtype.kind not in "fiucb":
            raise TypeError(f"y must be a real floating-point array, got NumPy dtype {y.dtype}")
        if y.dtype.kind == "c":
            raise TypeError(
                f"y must be real (phase retrieval takes magnitudes |Ax+e|), got dtype {y.dtype}"
            )
        t = torch.from_numpy(np.ascontiguousarray(y))
        return t, lambda r: r.detach().cpu().numpy().astype(y.dtype, copy=False)
    if hasattr(y, "__dlpack__"):
        t = torch.from_dlpack(y)
        from_dlpack = _from_dlpack_of(type(y))
        if from_dlpack is None:
            return t, lambda r: r.to(device=t.device, dtype=t.dtype)
        return t, lambda r: from_dlpack(r.to(device=t.device, dtype=t.dtype).contiguous())
    raise TypeError(
        f"y must be a torch.Tensor, a NumPy array or a __dlpack__ array, got {type(y).__name__}"
    )


def _from_dlpack_of(cls: type) -> Callable[[Any], Any] | None:
    """The ``from_dlpack`` of the library defining ``cls`` (e.g. ``cupy.from_dlpack``)."""
    parts = cls.__module__.split(".")
    for i in range(len(parts), 0, -1):
        fn = getattr(sys.modules.get(".".join(parts[:i])), "from_dlpack", None)
        if callable(fn):
            return fn
    return None


def _check_y(y: Tensor, op: Operator) -> bool:
    """Validates y against the operator; returns True for a batch ``(B, *out_shape)``."""
    if y.is_complex():
        raise TypeError(
            f"y must be real (phase retrieval takes magnitudes |Ax+e|), got dtype {y.dtype}"
        )
    if not y.is_floating_point():
        raise TypeError(
            f"y must be a floating-point array (images in [0, 1]), got dtype {y.dtype}; "
            "convert integer images with y / 255"
        )
    if y.numel() == 0:
        raise ValueError(f"y is empty (shape {tuple(y.shape)})")
    shape = tuple(y.shape)
    if shape == op.out_shape:
        batched = False
    elif len(shape) == len(op.out_shape) + 1 and shape[1:] == op.out_shape:
        batched = True
    else:
        raise ValueError(
            f"y has shape {shape} but the operator measures {op.out_shape} "
            f"(or a batch (B, *{op.out_shape}))"
        )
    if not bool(torch.isfinite(y).all()):
        bad = int((~torch.isfinite(y)).sum())
        raise ValueError(f"y contains {bad} NaN/Inf value(s); measurements must be finite")
    return batched


def reconstruct(
    y: Any,
    op: Any,
    *,
    init: str | Path | MetaInit = "default",
    steps: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    in_shape: Sequence[int] | None = None,
    callback: Callable[[StepInfo], None] | None = None,
    progress: bool = False,
) -> Reconstruction:
    """Reconstructs x from ``y = op(x) + noise`` with a Deep Image Prior.

    y: ``op.out_shape`` or a batch ``(B, *op.out_shape)`` (B independent problems
    sharing ``op``); torch, NumPy or any ``__dlpack__`` array (e.g. CuPy).
    op: a metadip operator, an object with ``.A``/``.A_adjoint`` (deepinv
    Physics) or a callable; the last two need ``in_shape=(C, H, W)``.
    init: ``"default"`` (the shipped meta-learned init), ``"random"`` (vanilla
    DIP: Adam, jitter, EMA), a file path or a ``MetaInit``.
    steps: fitting steps (default: the init's own horizon — 50 for a meta-init,
    1000 for ``"random"``). seed: seeds the random init and the input jitter.
    device: where to fit (default: y's device). dtype: compute dtype.
    callback: called with a ``StepInfo`` after every accepted step.
    """
    t, back = _as_tensor(y)
    op = as_operator(op, in_shape)
    batched = _check_y(t, op)
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    dev = torch.device(device) if device is not None else t.device
    op = op.to(device=dev, dtype=dtype)
    meta = load_init(init, channels=op.in_shape[0], seed=seed).to(device=dev, dtype=dtype)
    n_steps = meta.steps if steps is None else steps
    ys = t.to(device=dev, dtype=dtype)
    ys = ys if batched else ys[None]

    start = time.perf_counter()
    results = []
    for b in range(ys.shape[0]):
        params, hyper = prepare(meta, op.in_shape, steps=n_steps, seed=seed)
        desc = "reconstructing" if ys.shape[0] == 1 else f"reconstructing {b + 1}/{ys.shape[0]}"
        results.append(
            fit(
                params,
                ys[b : b + 1],
                op,
                hyper,
                n_steps,
                callback=callback,
                progress=progress,
                desc=desc,
            )
        )
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - start

    image = torch.cat([r.image for r in results])
    losses: Any = [r.losses for r in results]
    restored: Any = [r.restored for r in results]
    if not batched:
        image, losses, restored = image[0], losses[0], restored[0]
    return Reconstruction(
        image=back(image),
        losses=losses,
        steps=n_steps,
        seconds=seconds,
        device=dev,
        restored=restored,
        init=_describe(init, meta),
    )


def _describe(init: Any, meta: MetaInit) -> str:
    if isinstance(init, MetaInit):
        return str(meta.metadata.get("source", "MetaInit"))
    return str(init)
