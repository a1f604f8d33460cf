"""CUDA-graph capture of the whole fitting loop.

``CapturedFit`` records ``run_loop`` — for every step: forward, loss, gradient,
update and the per-problem restore checks — plus the final image into one CUDA
graph with static buffers, and replays it. What is inside the graph: every
kernel of the T steps (network, operator, TV and complex-measurement kernels
from whichever backend dispatch picks, the ``torch.where`` restores) and the
final forward pass; outside it: copying ``y`` in, reseeding the jitter
generator, and reading the results back. Per-step learning rates are read from
the device tensor ``hyper.lr``; the jitter generator is registered with the
graph and reseeded before each replay, so a replay draws fresh noise for each
seed and the same noise for the same seed, like an eager fit.

Graphs are cached by (init, operator, image shape, batch, steps, dtype, device)
and re-captured when any of these changes.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from metadip.guide import guide_input
from metadip.init import MetaInit
from metadip.inner import prepare, with_guide
from metadip.loop import FitResult, finish, result, run_loop
from metadip.operators import Operator

__all__ = ["CapturedFit", "cache_key", "cached_fit", "clear_cache", "use_graph", "why_not"]

_CACHE: OrderedDict[tuple, CapturedFit] = OrderedDict()
CACHE_SIZE = 4


def why_not(device: torch.device, callback: Any = None) -> str | None:
    """Why a fit on ``device`` cannot be graph-captured, or None when it can."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device; the fit runs on {device}"
    if not torch.cuda.is_available():
        return "CUDA is not available in this torch build or on this machine"
    if callback is not None:
        return "a per-step callback reads values on the host every step, which a graph cannot"
    return None


def use_graph(graph: bool | None, device: torch.device, callback: Any = None) -> bool:
    """``reconstruct``'s ``graph`` argument resolved: None captures where ``why_not`` has
    no reason against it, True where it has none or raises with it, False never."""
    if graph not in (None, True, False):
        raise TypeError(f"graph must be None, True or False, got {graph!r}")
    if graph is False:
        return False
    reason = why_not(device, callback)
    if graph is True and reason:
        raise RuntimeError(f"graph=True but the fit cannot be captured: {reason}")
    return reason is None


def cache_key(init: Any, seed: int, op: Any, *rest: Any) -> tuple:
    """The cache key of a fit of the caller's ``init`` and operator ``op`` (objects by
    identity: the entry keeps them alive so an id is not reused; a list of operators by
    its items'), then ``rest``: everything else the captured graph depends on."""
    if isinstance(init, MetaInit):
        init_key: Any = id(init)
    else:  # a random init depends on the seed; a named or file init does not
        init_key = (str(init), seed) if init in ("random", "decoder") else str(init)
    op_key = tuple(id(o) for o in op) if isinstance(op, (list, tuple)) else id(op)
    return (init_key, op_key, *rest)


class CapturedFit:
    """One captured T-step fit of ``batch`` problems ``(batch, *op.out_shape)``."""

    def __init__(
        self,
        meta: MetaInit,
        op: Operator,
        batch: int,
        steps: int,
        warmup: int = 2,
        with_truth: bool = False,
    ):
        reason = why_not(meta.device)
        if reason:
            raise RuntimeError(f"cannot capture a CUDA graph: {reason}")
        self.op, self.steps = op, steps
        self.y = torch.zeros(batch, *op.out_shape, device=meta.device, dtype=meta.dtype)
        # The ground truth of a run that records PSNR per step (x_true=), also static.
        self.x = (
            torch.zeros(batch, *op.in_shape, device=meta.device, dtype=meta.dtype)
            if with_truth
            else None
        )
        guide = guide_input(meta.config, op, self.y) if meta.config.guided else None
        params, self.hyper = prepare(
            meta, op.in_shape, batch=batch, steps=steps, guide=guide, problem=(op, self.y)
        )
        self.params = {k: v.clone() for k, v in params.items()}
        gen = self.hyper.generator
        # Graph-safe RNG needs a generator the graph owns; a registered one advances per replay.
        if gen is not None:
            gen = torch.Generator(device=meta.device)
            self.hyper = replace(self.hyper, generator=gen)

        side = torch.cuda.Stream(device=meta.device)
        side.wait_stream(torch.cuda.current_stream(meta.device))
        with torch.cuda.stream(side):
            # Warm-up off the capture stream: Triton compiles, cuDNN picks algorithms,
            # the allocator reaches its steady state.
            for _ in range(warmup):
                self._body()
        torch.cuda.current_stream(meta.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        if gen is not None:
            self.graph.register_generator_state(gen)
        with torch.cuda.graph(self.graph):
            self.trace, self.image = self._body()

    def _body(self):
        hyper = self.hyper
        if hyper.config.guided:
            # The guide A^T y is computed from the static y inside the graph.
            hyper = with_guide(hyper, self.op, self.y)
        trace = run_loop(self.params, self.y, self.op, hyper, self.steps, x_true=self.x)
        with torch.no_grad():
            image = result(trace.params, trace.state, trace.hyper)
        return trace, image

    def run(self, y: Tensor, seed: int = 0, x_true: Tensor | None = None) -> FitResult:
        """Replays the graph on ``y`` ``(batch, *out_shape)`` (and ``x_true`` when captured
        with the truth); results are copies."""
        if tuple(y.shape) != tuple(self.y.shape):
            raise ValueError(f"captured for y of shape {tuple(self.y.shape)}, got {tuple(y.shape)}")
        if (x_true is None) != (self.x is None):
            raise ValueError("x_true must be given exactly when the graph was captured with it")
        self.y.copy_(y)
        if self.x is not None:
            self.x.copy_(x_true)
        if self.hyper.generator is not None:
            self.hyper.generator.manual_seed(int(seed))
        self.graph.replay()
        res = finish(self.trace, self.image)
        return FitResult(res.image.clone(), res.losses, res.restored, res.psnr)


def cached_fit(
    key: tuple,
    meta: MetaInit,
    op: Operator,
    batch: int,
    steps: int,
    keep: Any = None,
    with_truth: bool = False,
) -> CapturedFit:
    """The captured fit for ``key``, capturing it on a miss (least recently used evicted).
    ``keep``: objects the key refers to by identity, held as long as the entry;
    ``with_truth``: the graph also records PSNR per step (part of the key)."""
    key = (*key, with_truth)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    captured = CapturedFit(meta, op, batch, steps, with_truth=with_truth)
    captured.keep = keep
    _CACHE[key] = captured
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return captured


def clear_cache() -> None:
    """Drops every captured graph (and the memory pools they hold)."""
    _CACHE.clear()
