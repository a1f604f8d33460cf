"""Image quality metrics on [0, 1] images."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


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
