"""Input arrays of ``reconstruct``: conversion to torch (and back) and validation."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metadip.operators import Operator

__all__ = ["as_tensor", "check_truth", "check_y"]


def as_tensor(y: Any) -> tuple[Tensor, Callable[[Tensor], Any]]:
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


def check_y(y: Tensor, op: Operator) -> bool:
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


def check_truth(x_true: Any, op: Operator, batch: int | None) -> Tensor:
    """The ground truth ``x_true`` as a tensor ``(B, *op.in_shape)``: ``op.in_shape`` or,
    for a batch of ``batch`` problems, ``(batch, *op.in_shape)``; finite."""
    t, _ = as_tensor(x_true)
    want = op.in_shape if batch is None else (batch, *op.in_shape)
    if tuple(t.shape) != tuple(want) or not t.is_floating_point():
        raise ValueError(
            f"x_true must be a real array of shape {tuple(want)} (the image y measures), got "
            f"shape {tuple(t.shape)} and dtype {t.dtype}"
        )
    if not bool(torch.isfinite(t).all()):
        raise ValueError("x_true contains NaN/Inf values")
    return t if batch is not None else t[None]
