"""Benchmark helpers: the devices to run on and the environment recorded with each result."""

from __future__ import annotations

import os
import platform

import pytest
import torch


def devices() -> list:
    """CPU always; CUDA when present (GPU rows carry the gpu marker)."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out.append(pytest.param("cuda", marks=pytest.mark.gpu))
    return out


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def environment(device: str) -> dict:
    name = torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor()
    return {
        "device": device,
        "device_name": name or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        # The machine may be shared: the load average says how much to trust a CPU time.
        "loadavg_1min": os.getloadavg()[0],
    }
