"""Shared fixtures: tiny float64 initializations and seeded test images."""

from __future__ import annotations

import pytest
import torch

from metadip.init import MetaInit


def tiny_init(channels: int = 1, steps: int = 4, rule: str = "sgd", **kw) -> MetaInit:
    """A small skip network in float64 (fast enough for finite differences)."""
    opts = {"width": 6, "depth": 2, "num_fourier": 2, "dtype": torch.float64}
    opts.update(kw)
    return MetaInit.random(channels, steps=steps, rule=rule, **opts)


def smooth_image(channels: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A smooth random image in (0, 1): low-frequency content that DIP fits before noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, channels, max(2, h // 8), max(2, w // 8), generator=g)
    up = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    return up[0].clamp(0.05, 0.95)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(1234)
    yield


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` skip, with the reason, where no CUDA device is present."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is available on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
