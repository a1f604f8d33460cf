"""Meta-gradients: differentiate the outer loss through the inner fitting loop.

The inner loop is ``metadip.inner.step`` — the same function ``reconstruct`` runs —
applied ``T`` times from the meta-initialization:

    (θ_{t+1}, m_{t+1}) = step(θ_t, m_t; lr[t], μ, λ_tv, B),   θ_0 = W,  m_0 = 0,

and the outer loss of one task ``(x, op, y)`` is ``L = mean((f_{θ_T}(z) − x)²)``
(or the mean absolute error), averaged over the task batch. Meta-parameters
(each can be frozen): the initial weights ``W``, the per-step per-tensor log
learning rates ``log_lr`` (``lr = exp(log_lr)``), the momentum ``μ``, the TV
weight ``λ_tv`` and the Fourier-feature scale ``s`` (``B = s · basis``).

Modes of ``meta_gradient``:

``unrolled``
    one autograd graph through all T steps (``create_graph=True``): the
    reference; memory grows linearly with T.
``checkpointed``
    forward without a graph, saving ``(θ_t, optimizer state)`` every ``segment``
    steps; backward walks the segments last-first, recomputes each with
    ``create_graph=True`` and pulls the incoming adjoint ``(ā_θ, ā_m)`` through
    it with one vector-Jacobian product (``torch.autograd.grad`` with
    ``grad_outputs``; the Hessian-vector terms come from the double backward),
    then frees the segment. The hyper-parameters (``lr``, ``μ``, ``λ_tv``, ``B``)
    are shared by every segment, so their gradients are summed over segments and
    chained to the meta-parameters (``exp``, ``s · basis``) once at the end.
    Memory: ``O(|θ| · T / segment)`` saved states plus one segment's graph.
``first_order``
    the inner gradient ``g_t`` is treated as a constant (no Hessian terms): cheap,
    approximate, for comparison.
``auto``
    ``unrolled`` when its graph fits comfortably in the memory available (it saves
    the checkpointed forward, about a third of the work), else ``checkpointed`` with
    the longest segment that fits. The graph of one step is measured once per network,
    shape and device (``metadip.planning``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from metadip.checkpointed import HYPER_NAMES, grad_or_zero, outer_losses, task_checkpointed
from metadip.init import MetaInit
from metadip.inner import advance, init_state, output, prepare
from metadip.operators import Operator, Stacked, moved
from metadip.planning import default_segment, plan

__all__ = [
    "HYPER_NAMES",
    "MODES",
    "Task",
    "meta_gradient",
    "meta_names",
    "outer_loss",
]

MODES = ("auto", "unrolled", "checkpointed", "first_order")
LOSSES = ("l2", "l1")

Task = tuple[Tensor, Any, Tensor]  # (x (C, H, W), operator, y (*out_shape))


def meta_names(init: MetaInit) -> list[str]:
    """Every meta-parameter name: ``weights.<param>`` for each weight tensor, then
    ``HYPER_NAMES``; these are also ``init.tensors()``'s keys."""
    return [f"weights.{k}" for k in init.weights] + list(HYPER_NAMES)


def _trainable(init: MetaInit, frozen: Iterable[str]) -> list[str]:
    """Names not frozen; ``"weights"`` freezes every weight tensor."""
    names = meta_names(init)
    frozen = set(frozen)
    unknown = frozen - set(names) - {"weights"}
    if unknown:
        raise ValueError(
            f"unknown meta-parameter(s) to freeze: {sorted(unknown)}; expected 'weights', "
            f"{', '.join(HYPER_NAMES)} or 'weights.<name>'"
        )
    out = []
    for n in names:
        if n in frozen or (n.startswith("weights.") and "weights" in frozen):
            continue
        out.append(n)
    return out


def _with_leaves(init: MetaInit, trainable: Sequence[str]) -> tuple[MetaInit, dict[str, Tensor]]:
    """A copy of ``init`` whose trainable tensors are fresh leaves with requires_grad."""
    leaves: dict[str, Tensor] = {}

    def leaf(name: str, t: Tensor) -> Tensor:
        if name in trainable:
            leaves[name] = t.detach().clone().requires_grad_()
            return leaves[name]
        return t.detach()

    weights = {k: leaf(f"weights.{k}", v) for k, v in init.weights.items()}
    kw = {n: leaf(n, getattr(init, n)) for n in HYPER_NAMES}
    return replace(init, weights=weights, **kw), leaves


def _check_tasks(tasks: Sequence[Task], init: MetaInit) -> list[tuple[Tensor, Any, Tensor]]:
    """Validates ``(x, op, y)`` tuples; returns them batched ``(1, C, H, W)`` / ``(1, *out)``
    on the init's device and dtype."""
    if len(tasks) == 0:
        raise ValueError("meta_gradient needs at least one task (x, op, y), got none")
    out = []
    for i, task in enumerate(tasks):
        if not isinstance(task, (tuple, list)) or len(task) != 3:
            raise TypeError(f"task {i} must be a tuple (x, op, y), got {type(task).__name__}")
        x, op, y = task
        if not hasattr(op, "in_shape") or not hasattr(op, "forward"):
            raise TypeError(f"task {i}: op must be a metadip Operator, got {type(op).__name__}")
        shape = tuple(op.in_shape)
        if tuple(x.shape) == shape:
            x = x[None]
        elif tuple(x.shape) != (1, *shape):
            raise ValueError(
                f"task {i}: x has shape {tuple(x.shape)}, expected {shape} (the operator's "
                "in_shape) or (1, *in_shape)"
            )
        if tuple(y.shape) == tuple(op.out_shape):
            y = y[None]
        elif tuple(y.shape) != (1, *op.out_shape):
            raise ValueError(
                f"task {i}: y has shape {tuple(y.shape)}, expected {tuple(op.out_shape)} "
                "(the operator's out_shape) or (1, *out_shape)"
            )
        dev, dt = init.device, init.dtype
        out.append((x.to(dev, dt), moved(op, dev, dt), y.to(dev, dt)))
    return out


def _task_unrolled(
    init: MetaInit, leaves: dict[str, Tensor], task: tuple, steps: int, loss: str, first: bool
) -> tuple[Tensor, dict[str, Tensor]]:
    x, op, y = task
    params, hyper = prepare(init, op.in_shape, steps=steps, create_graph=True, problem=(op, y))
    hyper.first_order = first
    params, _ = advance(params, init_state(params, hyper), y, op, hyper, 0, steps)
    value = outer_losses(output(params, hyper), x, loss).mean()
    names = list(leaves)
    gs = grad_or_zero([value], [leaves[n] for n in names])
    return value.detach(), dict(zip(names, gs, strict=True))


def _batch_unrolled(
    init: MetaInit,
    leaves: dict[str, Tensor],
    batch: list[tuple],
    steps: int,
    loss: str,
    first: bool,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Every task in one grouped pass (``groups = B``: each item starts from the same
    weights, expanded, so the gradient sums over items): the mean outer loss and its
    gradient. Equals the loop over ``_task_unrolled`` (same noise draws: one per batch)."""
    xs = torch.cat([x for x, _, _ in batch])
    ys = torch.cat([y for _, _, y in batch])
    op = Stacked([o for _, o, _ in batch])
    params, hyper = prepare(
        init, op.in_shape, batch=len(batch), steps=steps, create_graph=True, problem=(op, ys)
    )
    hyper.first_order = first
    params, _ = advance(params, init_state(params, hyper), ys, op, hyper, 0, steps)
    image = output(params, hyper)
    value = outer_losses(image, xs, loss)
    names = list(leaves)
    gs = grad_or_zero([value.mean()], [leaves[n] for n in names])
    return value.mean().detach(), dict(zip(names, gs, strict=True))


def _groupable(batch: list[tuple]) -> bool:
    """Tasks one grouped pass can run: more than one, metadip operators of one shape."""
    first = batch[0][1]
    return len(batch) > 1 and all(
        isinstance(o, Operator) and (o.in_shape, o.out_shape) == (first.in_shape, first.out_shape)
        for _, o, _ in batch
    )


def meta_gradient(
    init: MetaInit,
    tasks: Sequence[Task],
    steps: int,
    mode: str = "checkpointed",
    segment: int | None = None,
    loss: str = "l2",
    frozen: Iterable[str] = (),
    grouped: bool | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Outer loss and its gradient w.r.t. the meta-parameters of ``init``.

    init: the meta-initialization (its device and dtype are used for everything).
    tasks: ``(x, op, y)`` tuples: ground truth ``(C, H, W)``, operator, measurement
    ``op.out_shape`` (a leading batch dimension of 1 is accepted).
    steps: inner steps T (``init``'s rates are cut or extended to T, see ``with_steps``).
    mode: ``"auto"`` | ``"unrolled"`` | ``"checkpointed"`` | ``"first_order"``.
    segment: steps per checkpointed segment (default ⌈√T⌉; ``auto`` plans its own).
    loss: ``"l2"`` (mean squared error) or ``"l1"``.
    frozen: names not to differentiate: ``"weights"`` (all), ``"weights.<name>"``,
    ``"log_lr"``, ``"momentum"``, ``"tv_weight"``, ``"fourier_scale"``.
    grouped: run the tasks as one grouped pass (``groups = B``) instead of a loop, in
    the unrolled and first-order modes, when they share one operator shape (the same
    result; 1.08× faster for B = 4, 1.25× for B = 8 on one CPU thread,
    ``benchmarks/grouped_meta_batch.py``; memory B× one task's graph). None: in
    ``auto`` mode when the B graphs fit, else as asked (True for ``unrolled``).

    Returns ``(outer_loss, grads)``: the scalar loss averaged over tasks (detached)
    and a dict ``name -> gradient`` (same shapes as ``init.tensors()[name]``) for
    each trainable meta-parameter. The gradient of ``log_lr`` has ``init.log_lr``'s
    shape even when ``steps`` differs from ``init.steps``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if segment is None:
        segment = default_segment(steps)
    if isinstance(segment, bool) or not isinstance(segment, int) or segment < 1:
        raise ValueError(f"segment must be an integer >= 1, got {segment!r}")
    if not isinstance(init, MetaInit):
        raise TypeError(f"init must be a MetaInit, got {type(init).__name__}")
    if init.rule != "sgd":
        # Adam's sqrt(v) has an infinite derivative where an inner gradient is exactly 0
        # (e.g. conv biases in front of an instance norm): its meta-gradient would be NaN.
        raise ValueError(f"meta-gradients need the rule 'sgd' (momentum SGD), got {init.rule!r}")
    if init.ema > 0:
        raise ValueError(
            f"meta-training differentiates the final image f_θT(z); init.ema must be 0, "
            f"got {init.ema}"
        )
    if init.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"init must be float32 or float64, got {init.dtype}")
    trainable = _trainable(init, frozen)
    batch = _check_tasks(tasks, init)
    meta, leaves = _with_leaves(init, trainable)
    total = torch.zeros((), dtype=init.dtype, device=init.device)
    grads = {n: torch.zeros_like(t) for n, t in leaves.items()}
    if mode == "auto":
        mode, segment = plan(meta, batch[0], steps)
        # One grouped pass holds the graphs of all B tasks at once: only when they fit.
        fits = plan(meta, batch[0], steps * len(batch))[0] == "unrolled"
        grouped = fits if grouped is None else grouped
    if mode != "checkpointed" and (grouped is not False) and _groupable(batch):
        value, g = _batch_unrolled(meta, leaves, batch, steps, loss, mode == "first_order")
        return value, g
    for task in batch:
        if mode == "checkpointed":
            value, g = task_checkpointed(meta, leaves, task, steps, segment, loss)
        else:
            value, g = _task_unrolled(meta, leaves, task, steps, loss, mode == "first_order")
        total += value
        for n in grads:
            grads[n] += g[n]
    n = len(batch)
    return total / n, {k: v / n for k, v in grads.items()}


def outer_loss(init: MetaInit, tasks: Sequence[Task], steps: int, loss: str = "l2") -> Tensor:
    """The outer loss alone (no graph): mean over tasks of the ``loss`` between
    ``f_θT(z)`` after ``steps`` inner steps and ``x``."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    total = torch.zeros((), dtype=init.dtype, device=init.device)
    batch = _check_tasks(tasks, init)
    with torch.no_grad():
        for x, op, y in batch:
            params, hyper = prepare(init, op.in_shape, steps=steps, problem=(op, y))
            params, _ = advance(params, init_state(params, hyper), y, op, hyper, 0, steps)
            total += outer_losses(output(params, hyper), x, loss).mean()
    return total / len(batch)
