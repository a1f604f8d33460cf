"""``metadip.reconstruct``: validate the input, fit, and hand the image back in the caller's
array type."""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from metadip import graphs
from metadip.arrays import as_tensor, check_truth, check_y
from metadip.dihedral import check_ensemble
from metadip.guide import check_guide_operator, guide_input
from metadip.init import MetaInit
from metadip.inner import prepare
from metadip.loop import StepInfo, fit
from metadip.losses import check_loss
from metadip.operators import Operator, Stacked, as_operator, moved
from metadip.posterior import (
    LANGEVIN_SCALE,
    PRIOR_DECAY,
    SampleCollector,
    check_memory,
    check_samples,
)
from metadip.shipped import default_init_path, large_init_path, load_init
from metadip.stopping import stopped_result, watcher_for, watching

__all__ = ["LONG_FIT", "Reconstruction", "reconstruct"]

# Fits this long show a progress bar by default in interactive use.
LONG_FIT = 200


@dataclass
class Reconstruction:
    """The result of ``reconstruct``.

    ``image``: ``op.in_shape`` (or ``(B, *op.in_shape)`` for a batch of
    measurements), same array type, device and dtype as ``y``. ``losses``: the
    loss at each step (one list per batch item for a batch). ``restored``: step
    indices where a non-finite or exploding loss made the fit go back to the last
    good parameters with half the step size (empty when that never happened).
    ``graph``: whether the loop ran as a replayed CUDA graph. With ``steps="auto"``,
    ``steps`` is the number of steps run and ``stopped_at`` the step whose image is
    returned (one per problem for a batch); otherwise ``stopped_at`` is None.
    With ``samples = K > 1``: ``image`` is the posterior mean and ``std`` the per-pixel
    standard deviation (like ``image``) over K chains and their last steps
    (``metadip.posterior``); ``losses`` and ``restored`` are over the chains of a
    problem (mean loss, union of restore steps). Otherwise ``std`` is None.
    ``psnr``: with ``x_true``, the PSNR after each step (per problem for a batch; the
    mean over the chains with ``samples``).
    """

    image: Any
    losses: list[float] | list[list[float]]
    steps: int
    seconds: float
    device: torch.device
    restored: list[int] | list[list[int]] = field(default_factory=list)
    init: str = ""
    graph: bool = False
    stopped_at: int | list[int] | None = None
    std: Any = None
    samples: int = 1
    psnr: list[float] | list[list[float]] | None = None


def _operator(op: Any, in_shape: Sequence[int] | None) -> Operator:
    """A metadip operator; a list or tuple gives one operator per batch item."""
    if isinstance(op, (list, tuple)):
        return Stacked([as_operator(o, in_shape) for o in op])
    return as_operator(op, in_shape)


def _chunk(op: Operator, start: int, stop: int) -> Operator:
    return Stacked(op.ops[start:stop]) if isinstance(op, Stacked) else op


def reconstruct(
    y: Any,
    op: Any,
    *,
    init: str | Path | MetaInit = "default",
    steps: int | str | None = None,
    max_steps: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    in_shape: Sequence[int] | None = None,
    batch_size: int | None = None,
    graph: bool | None = None,
    callback: Callable[[StepInfo], None] | None = None,
    progress: bool | None = None,
    samples: int = 1,
    x_true: Any = None,
    ensemble: int | None = None,
) -> Reconstruction:
    """Reconstructs x from ``y = op(x) + noise`` with a Deep Image Prior.

    y: ``op.out_shape`` or a batch ``(B, *op.out_shape)`` of B independent problems,
    fitted by B networks at once (grouped convolutions; item b equals a fit of b
    alone with the same seed); torch, NumPy or any ``__dlpack__`` array (e.g. CuPy).
    op: a metadip operator (shared by the batch), a list of B operators (one per
    item), an object with ``.A``/``.A_adjoint`` (deepinv Physics) or a callable;
    the last two need ``in_shape=(C, H, W)``.
    init: ``"default"`` (the shipped init for ``op.task``: Educated DIP + SURE for
    denoising and for inpainting; for CS, phase retrieval, deblurring and every other
    linear operator a pretrained denoiser reading a TV-regularized estimate of the image;
    the meta-learned MetaDIP init for a non-linear operator of any other task),
    ``"large"`` (denoising only: the default's recipe at width 128, still training on
    GPUs; now ~0.26 dB behind the denoising default at 50 steps, at ~4.5× its CPU time),
    ``"random"``
    (vanilla DIP: Adam, jitter, EMA),
    ``"decoder"`` (the vanilla Deep Decoder: image sizes a multiple of 32), a file path
    or a ``MetaInit`` (one with a classical solver, ``metadip.classical``, runs it after
    the network). A 3-channel init also fits 1-channel problems (its output's channel
    mean).
    steps: fitting steps (default: the init's own horizon — 50 for a meta-init,
    1000 for ``"random"``; 0 returns the init's own image unfitted, which for an
    Educated-DIP init is its pretrained map), or ``"auto"``: stop without ground
    truth where the windowed variance of the iterates is lowest (``metadip.stopping``;
    for denoising with σ > 0, once the data fit is at most 1.1 σ²; one extra forward
    per step), after at most ``max_steps`` (default: the larger of
    1000 and the init's horizon). seed: seeds the random init and the input jitter.
    device: where to fit (default: y's device). dtype: compute dtype (default: float64
    for a float64 ``y``, else float32).
    batch_size: problems fitted per pass (default: all B; lower it to save memory).
    graph: capture the loop as a CUDA graph and replay it. None ("auto"): on CUDA
    without a callback, falling back to eager fitting, with a warning, if capture or
    replay fails; True: required, an error says why if impossible; False: eager.
    callback: called with a ``StepInfo`` after every step in which a problem was
    accepted; ``StepInfo.first`` is the index of the pass's first problem.
    progress: a progress bar; None shows one for fits of ``LONG_FIT`` steps or more when
    stderr is a terminal (vanilla DIP runs minutes on a CPU).
    samples: K > 1 runs K chains per problem in one batched pass (own input jitter,
    Langevin noise and weight-decay prior each: Bayesian DIP), returning their mean and
    per-pixel ``std``; chain k is seeded ``seed + k``. Eager only; not with "auto";
    ``batch_size`` then counts problems, each with its K chains (a callback sees the
    B·K chains as items).
    x_true: the ground truth (like ``rec.image``): the PSNR of the image after each step
    is computed on the device (one extra forward pass per step; graphs stay on) and
    returned as ``rec.psnr`` (of the ensemble, when there is one).
    ensemble: the returned image is the average of the fitted network's outputs for this
    many flips and rotations of its input image (1, 2, 4 or 8: the geometric
    self-ensemble, ``metadip.dihedral``; 8 costs 7 more forward passes, once). None: the
    init's own choice (8 for the shipped denoising and inpainting inits, else 1).
    Image-input (Educated DIP) inits only, and not with "auto" or ``samples``, whose
    images are iterates.
    """
    t, back = as_tensor(y)
    user_op = op
    op = _operator(op, in_shape)
    batched = check_y(t, op)
    auto = steps == "auto"
    samples = check_samples(samples)
    if samples > 1 and auto:
        raise ValueError("samples > 1 runs a fixed number of steps: pass an integer steps")
    if samples > 1 and graph is True:
        raise RuntimeError("graph=True but the fit cannot be captured: chains run eagerly")
    if (
        not auto
        and steps is not None
        and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0)
    ):
        raise ValueError(f"steps must be an integer >= 0 or 'auto', got {steps!r}")
    if ensemble is not None and check_ensemble(ensemble) > 1 and (auto or samples > 1):
        raise ValueError(
            f"ensemble={ensemble} averages the final network's outputs; steps='auto' and "
            "samples > 1 return iterates: pass ensemble=1 (or None)"
        )
    if samples > 1 and steps == 0:
        raise ValueError("samples > 1 draws from the fit's iterates: pass steps >= 1")
    if max_steps is not None:
        if not auto:
            raise ValueError("max_steps bounds automatic stopping: pass it with steps='auto'")
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be an integer >= 1, got {max_steps!r}")
    if dtype is None:
        dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    if isinstance(op, Stacked) and (not batched or t.shape[0] != len(op.ops)):
        got = tuple(t.shape[:1]) if batched else "no batch dimension"
        raise ValueError(
            f"{len(op.ops)} operators were given, one per item, so y must be a batch "
            f"({len(op.ops)}, *{op.out_shape}); got {got}"
        )
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be an integer >= 1 or None, got {batch_size!r}")
    dev = torch.device(device) if device is not None else t.device
    if auto and graph is True:
        raise RuntimeError(
            "graph=True but the fit cannot be captured: steps='auto' reads the iterates on "
            "the host every step, which a graph cannot"
        )
    use_graph = (
        False if auto or samples > 1 or steps == 0 else graphs.use_graph(graph, dev, callback)
    )
    op_dev = moved(op, dev, dtype)
    meta = load_init(init, channels=op.in_shape[0], seed=seed, task=op.task, linear=op.linear)
    if ensemble is not None or auto or samples > 1:
        meta = replace(meta, ensemble=ensemble or 1)
    meta = meta.to(device=dev, dtype=dtype)
    if meta.config.guided:
        check_guide_operator(meta.config, op)
    check_loss(meta.loss, op)
    # Automatic stopping runs up to max_steps; a fixed count defaults to the init's horizon.
    fixed = meta.steps if steps is None else steps
    n_steps = (max_steps or max(1000, meta.steps)) if auto else fixed
    ys = t.to(device=dev, dtype=dtype)
    ys = ys if batched else ys[None]
    xs = None
    if x_true is not None:
        xs = check_truth(x_true, op, ys.shape[0] if batched else None).to(dev, dtype)
    if samples > 1:
        ys, op_dev = ys.repeat_interleave(samples, dim=0), _repeat(op_dev, samples)
        xs = None if xs is None else xs.repeat_interleave(samples, dim=0)
    total = ys.shape[0]
    per_pass = min((batch_size or total) * samples, total)
    if samples > 1:
        # The chains of one pass are fitted together: that is what must fit in memory.
        check_memory(meta, op.in_shape, per_pass)
    if progress is None:
        progress = n_steps >= LONG_FIT and sys.stderr.isatty()

    start = time.perf_counter()
    results = []
    stops: list[int] = []
    stds: list[Tensor] = []
    for first in range(0, total, per_pass):
        stop = min(first + per_pass, total)
        part = _chunk(op_dev, first, stop)
        if use_graph:
            # Keyed by the caller's operator object (by identity, kept alive with the entry),
            # not by the adapter built for this call, so a deepinv physics, a callable or a
            # list of operators reuses its graph on the next call.
            key = graphs.cache_key(
                init, seed, user_op, meta.ensemble, first, stop, n_steps, dtype, str(dev)
            )
            try:
                captured = graphs.cached_fit(
                    key,
                    meta,
                    part,
                    stop - first,
                    n_steps,
                    keep=(init, user_op),
                    with_truth=xs is not None,
                )
                truth = None if xs is None else xs[first:stop]
                results.append(captured.run(ys[first:stop], seed, truth))
                continue
            except Exception as exc:
                if graph is True:
                    raise
                # graph="auto": the same fit, eager, rather than no result.
                warnings.warn(
                    f"CUDA-graph capture or replay failed ({type(exc).__name__}: {exc}); "
                    "fitting eagerly instead (pass graph=False to skip the attempt)",
                    RuntimeWarning,
                    stacklevel=2,
                )
                use_graph = False
        guide = (
            guide_input(meta.config, part, ys[first:stop], progress=progress)
            if meta.config.guided
            else None
        )
        chains = None
        if samples > 1:
            chains = {
                "seeds": [seed + i % samples for i in range(first, stop)],
                "langevin": LANGEVIN_SCALE,
                "prior": PRIOR_DECAY,
            }
        params, hyper = prepare(
            meta,
            op.in_shape,
            batch=stop - first,
            steps=n_steps or None,  # 0 steps: the init as it is
            seed=seed,
            guide=guide,
            problem=(part, ys[first:stop]),
            **(chains or {}),
        )
        desc = "reconstructing" if total == 1 else f"reconstructing {first + 1}-{stop}/{total}"
        cb = None if callback is None else _offset(callback, first)
        watcher = watcher_for(part, stop - first, n_steps) if auto else None
        if watcher is not None:
            cb = watching(watcher, cb)
        collector = SampleCollector(n_steps, samples, cb) if samples > 1 else None
        res = fit(
            params,
            ys[first:stop],
            part,
            hyper,
            n_steps,
            callback=collector or cb,
            progress=progress,
            desc=desc,
            x_true=None if xs is None else xs[first:stop],
        )
        if watcher is not None:
            res, at = stopped_result(res, watcher)
            stops.extend(at)
        if collector is not None:
            res, std = collector.pooled(res)
            stds.append(std)
        results.append(res)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - start

    image = torch.cat([r.image for r in results])
    losses: Any = [row for r in results for row in r.losses]
    restored: Any = [row for r in results for row in r.restored]
    curves: Any = None if xs is None else [row for r in results for row in r.psnr or []]
    stopped_at: Any = stops or None
    run = max(len(row) for row in losses) if losses else 0
    std = torch.cat(stds) if stds else None
    if not batched:
        image, losses, restored = image[0], losses[0], restored[0]
        curves = None if curves is None else curves[0]
        stopped_at = stops[0] if stops else None
        std = None if std is None else std[0]
    return Reconstruction(
        image=back(image),
        losses=losses,
        steps=run if auto else n_steps,
        seconds=seconds,
        device=dev,
        restored=restored,
        init=_describe(init, meta, op),
        graph=use_graph,
        stopped_at=stopped_at,
        std=None if std is None else back(std),
        samples=samples,
        psnr=curves,
    )


def _repeat(op: Operator, k: int) -> Operator:
    """The operator of a problem batch for its chains: one per problem repeated k times."""
    return Stacked([o for o in op.ops for _ in range(k)]) if isinstance(op, Stacked) else op


def _offset(callback: Callable[[StepInfo], None], first: int) -> Callable[[StepInfo], None]:
    def call(info: StepInfo) -> None:
        info.first = first
        callback(info)

    return call


def _describe(init: Any, meta: MetaInit, op: Operator) -> str:
    if isinstance(init, MetaInit):
        return str(meta.metadata.get("source", "MetaInit"))
    if init == "default":
        return f"default ({default_init_path(op.task, op.in_shape[0], op.linear).name})"
    if init == "large":
        return f"large ({large_init_path(op.task).name})"
    return str(init)
