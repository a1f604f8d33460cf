"""Denoisers for the baselines (PnP-ADMM's plug-in prior, BM3D alone): BM3D, a Gaussian
stand-in, the shipped DnCNN (``"dncnn"``) or your own — anything callable
as ``den(x, sigma) -> x̂`` with ``x`` ``(B, C, H, W)`` in [0, 1] and ``sigma`` the noise
std on the [0, 1] scale.

Plugging in your own denoiser (e.g. DRUNet with weights you already have; nothing is
downloaded): anything callable as ``den(x, sigma) -> x̂`` with ``x`` ``(B, C, H, W)``
works. ``load_denoiser("my_pkg.models:DRUNet", weights="drunet.pth")`` imports the
attribute, instantiates it when it is a class, loads a ``state_dict`` from the weights
file (``torch.load(..., weights_only=True)``), puts it in eval mode and wraps it so it
is called under ``torch.no_grad()``; a ``path/to/file.py:name`` spec works the same
way. A network that takes only the image (no noise level) is called as ``den(x)``.
On the command line: ``metadip eval --methods admm-bm3d --denoiser SPEC
[--denoiser-weights FILE]``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "BaselineUnavailable",
    "Denoiser",
    "bm3d_denoise",
    "bm3d_denoiser",
    "dncnn_denoiser",
    "gaussian_denoiser",
    "load_denoiser",
]

# ``den(x, sigma)``: x ``(B, C, H, W)`` in [0, 1], sigma on the [0, 1] scale -> same shape.
Denoiser = Callable[[Tensor, float], Tensor]


class BaselineUnavailable(ImportError):
    """An optional dependency of a baseline is not installed."""


def _import_bm3d() -> Any:
    try:
        import bm3d
    except ImportError as e:
        raise BaselineUnavailable(
            "the BM3D baselines need the 'bm3d' package, which is not installed: "
            "pip install 'metadip[baselines]' (or pip install bm3d)"
        ) from e
    return bm3d


def bm3d_denoise(y: Tensor, sigma: float) -> Tensor:
    """BM3D of one ``(C, H, W)`` image with noise std ``sigma`` (the [0, 1] scale).

    Colour images go through ``bm3d_rgb`` (opponent colour transform), grey ones
    through ``bm3d``. The result is clipped to [0, 1], in y's dtype and device.
    """
    bm3d = _import_bm3d()
    if y.dim() != 3 or y.shape[0] not in (1, 3):
        raise ValueError(f"bm3d_denoise expects a (1|3, H, W) image, got {tuple(y.shape)}")
    if not sigma > 0:
        raise ValueError(f"bm3d_denoise needs a noise std > 0, got {sigma}")
    a = y.detach().cpu().double().numpy()
    if a.shape[0] == 3:
        out = bm3d.bm3d_rgb(a.transpose(1, 2, 0), float(sigma)).transpose(2, 0, 1)
    else:
        out = bm3d.bm3d(a[0], float(sigma))[None]
    out = np.clip(np.ascontiguousarray(out), 0.0, 1.0)
    return torch.from_numpy(out).to(device=y.device, dtype=y.dtype)


def bm3d_denoiser() -> Denoiser:
    """BM3D as a batched ``Denoiser`` (raises ``BaselineUnavailable`` when bm3d is missing)."""
    _import_bm3d()

    def den(x: Tensor, sigma: float) -> Tensor:
        return torch.stack([bm3d_denoise(xi, sigma) for xi in x])

    return den


def gaussian_denoiser(width: float = 1.0) -> Denoiser:
    """A cheap stand-in denoiser: Gaussian smoothing whose std (pixels) is
    ``width · sigma · 255 / 25``, i.e. stronger for noisier input. Useful for tests and
    as a sanity baseline; it needs no optional package."""

    def den(x: Tensor, sigma: float) -> Tensor:
        std = max(width * sigma * 255 / 25, 1e-3)
        r = max(1, math.ceil(3 * std))
        t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
        g = torch.exp(-(t**2) / (2 * std**2))
        g = g / g.sum()
        c = x.shape[1]
        pad = torch.nn.functional.pad(x, (r, r, r, r), mode="replicate")
        k1 = g.view(1, 1, 1, -1).expand(c, 1, 1, -1)
        k2 = g.view(1, 1, -1, 1).expand(c, 1, -1, 1)
        out = torch.nn.functional.conv2d(pad, k1, groups=c)
        return torch.nn.functional.conv2d(out, k2, groups=c)

    return den


def dncnn_denoiser() -> Denoiser:
    """The shipped DnCNN of the RED solver (``metadip.classical.dncnn``), blind: the
    noise level is not an input, so ``sigma`` is ignored."""
    from metadip.classical.dncnn import shipped_denoiser

    def den(x: Tensor, sigma: float) -> Tensor:
        with torch.no_grad():
            return shipped_denoiser(x.device, x.dtype)(x)

    return den


def _import_spec(spec: str) -> Any:
    """``module.path:attr`` or ``path/to/file.py:attr`` -> the attribute."""
    if ":" not in spec:
        raise ValueError(
            f"denoiser spec must be 'module:attr' or 'file.py:attr' (or 'bm3d'), got {spec!r}"
        )
    where, attr = spec.rsplit(":", 1)
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise FileNotFoundError(f"denoiser module file {path} does not exist")
        mod_spec = importlib.util.spec_from_file_location(f"_metadip_denoiser_{path.stem}", path)
        if mod_spec is None or mod_spec.loader is None:
            raise ImportError(f"cannot import {path}")
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    if not hasattr(module, attr):
        raise AttributeError(f"{where} has no attribute {attr!r} (denoiser spec {spec!r})")
    return getattr(module, attr)


def _takes_sigma(fn: Any) -> bool:
    target = fn.forward if isinstance(fn, torch.nn.Module) else fn
    try:
        params = [
            p
            for p in inspect.signature(target).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
    except (TypeError, ValueError):
        return True
    return len(params) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


def load_denoiser(spec: str, weights: str | Path | None = None) -> Denoiser:
    """A ``Denoiser`` from ``"bm3d"``, ``"gaussian"``, ``"dncnn"`` or a user spec (see the
    module doc).

    ``weights``: a ``state_dict`` file loaded into the (instantiated) module; given
    for a spec that is not an ``nn.Module``, it is an error.
    """
    if spec == "bm3d":
        if weights is not None:
            raise ValueError("the bm3d denoiser takes no weights file")
        return bm3d_denoiser()
    if spec == "gaussian":
        return gaussian_denoiser()
    if spec == "dncnn":
        if weights is not None:
            raise ValueError("the dncnn denoiser is the shipped one; it takes no weights file")
        return dncnn_denoiser()
    obj = _import_spec(spec)
    if inspect.isclass(obj):
        obj = obj()
    if weights is not None:
        if not isinstance(obj, torch.nn.Module):
            raise TypeError(
                f"--denoiser-weights needs a torch.nn.Module, but {spec!r} is {type(obj).__name__}"
            )
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"denoiser weights file {path} does not exist")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        obj.load_state_dict(state)
    if isinstance(obj, torch.nn.Module):
        obj.eval()
    if not callable(obj):
        raise TypeError(f"denoiser {spec!r} is not callable ({type(obj).__name__})")
    with_sigma = _takes_sigma(obj)

    def den(x: Tensor, sigma: float) -> Tensor:
        with torch.no_grad():
            out = obj(x, sigma) if with_sigma else obj(x)
        if not isinstance(out, Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"denoiser {spec!r} returned {got}, expected {tuple(x.shape)}")
        return out

    return den
