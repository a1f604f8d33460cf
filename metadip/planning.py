"""How ``meta_gradient(mode="auto")`` spends memory: unrolled when the T steps' graph
fits, else checkpointed with the longest segment that does. One differentiable inner
step is measured once per network, shape, dtype and device with saved-tensor hooks.
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor

from metadip.init import MetaInit
from metadip.inner import init_state, prepare, step

__all__ = ["available_memory", "default_segment", "plan", "step_graph_bytes"]

# Share of the available memory an auto-planned meta-gradient may fill, and the factor on
# the saved graph for the transient tensors of the double backward.
MEMORY_SHARE = 0.5
BACKWARD_FACTOR = 2.0


def default_segment(steps: int) -> int:
    """≈ √T: balances saved states (T/k) against one segment's graph (k steps)."""
    return max(1, math.ceil(math.sqrt(steps)))


def available_memory(device: torch.device) -> int:
    """Bytes free on ``device``: CUDA's free memory, or the host's MemAvailable."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


_STEP_BYTES: dict[tuple, int] = {}


def step_graph_bytes(init: MetaInit, task: tuple) -> int:
    """Bytes autograd saves for one differentiable inner step of ``task`` (measured with
    saved-tensor hooks, cached per network config, shape, dtype and device)."""
    x, op, y = task
    key = (init.config, tuple(op.in_shape), init.dtype, str(init.device))
    if key not in _STEP_BYTES:
        params, hyper = prepare(init, op.in_shape, steps=1, create_graph=True, problem=(op, y))
        params = {k: v.detach().requires_grad_() for k, v in params.items()}
        seen: dict[int, int] = {}

        def pack(t: Tensor) -> Tensor:
            seen[id(t)] = t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            step(params, init_state(params, hyper), y, op, hyper, 0)
        _STEP_BYTES[key] = sum(seen.values())
    return _STEP_BYTES[key]


def plan(init: MetaInit, task: tuple, steps: int) -> tuple[str, int]:
    """``(mode, segment)`` for ``mode="auto"``: unrolled if ``steps`` steps' graph (times
    ``BACKWARD_FACTOR``) fits in ``MEMORY_SHARE`` of the free memory, else checkpointed
    with the longest segment that does (at least ⌈√T⌉)."""
    per_step = BACKWARD_FACTOR * step_graph_bytes(init, task)
    budget = MEMORY_SHARE * available_memory(init.device)
    if per_step * steps <= budget:
        return "unrolled", steps
    return "checkpointed", max(default_segment(steps), int(budget // max(per_step, 1)))
