"""Image quality metrics on [0, 1] images."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

__all__ = ["PsnrTrack", "psnr", "ssim"]


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def psnr(x: Any, ref: Any, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range^2 / mean((x - ref)^2))``."""
    a, b = _numpy(x), _numpy(ref)
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ, {a.shape} vs {b.shape}")
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)


def ssim(x: Any, ref: Any, data_range: float = 1.0) -> float:
    """Structural similarity (scikit-image) of ``(C, H, W)`` or ``(H, W)`` images."""
    from skimage.metrics import structural_similarity

    a, b = _numpy(x), _numpy(ref)
    if a.shape != b.shape:
        raise ValueError(f"ssim: shapes differ, {a.shape} vs {b.shape}")
    if a.ndim == 3:
        return float(structural_similarity(a, b, data_range=data_range, channel_axis=0))
    return float(structural_similarity(a, b, data_range=data_range))


class PsnrTrack:
    """A fitting callback (``reconstruct(..., callback=)``, ``loop.fit``) that records
    ``psnr(clamp(image, 0, 1), x)`` after each of the 1-based ``steps``, for the first
    image of the batch: ``curve`` is ``[(step, dB), ...]`` and ``seconds`` the time spent
    rendering and scoring (to subtract from a timed fit)."""

    def __init__(self, x: torch.Tensor, steps: Iterable[int]):
        self.x = x
        self.marks = {int(s) for s in steps}
        self.curve: list[tuple[int, float]] = []
        self.seconds = 0.0

    def __call__(self, info: Any) -> None:
        if info.step + 1 in self.marks:
            t0 = time.perf_counter()
            image = info.image()[0].to(device=self.x.device, dtype=self.x.dtype)
            self.curve.append((info.step + 1, psnr(image.clamp(0, 1), self.x)))
            self.seconds += time.perf_counter() - t0
