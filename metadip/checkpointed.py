"""The checkpointed meta-gradient of one task (``meta_gradient(mode="checkpointed")``)
and what every mode of ``metadip.meta`` shares: the outer loss and ``grad`` with zeros
for unused inputs.

Forward without a graph, saving ``(θ_t, optimizer state, RNG state)`` every ``segment``
steps; backward walks the segments last-first, recomputes each with a graph and pulls the
incoming adjoint ``(ā_θ, ā_m)`` through it with one vector-Jacobian product. The
hyper-parameters are shared by every segment, so their gradients are summed over
segments and chained to the meta-parameters once at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from metadip.init import MetaInit
from metadip.inner import Hyper, Params, State, advance, init_state, output, prepare

__all__ = ["HYPER_NAMES", "grad_or_zero", "outer_losses", "task_checkpointed"]

# Meta-parameters besides the weights, as named in MetaInit and in the gradient dict.
HYPER_NAMES = ("log_lr", "momentum", "tv_weight", "fourier_scale")


def outer_losses(image: Tensor, x: Tensor, loss: str) -> Tensor:
    """Outer loss per task ``(B,)``: mean squared (``l2``) or absolute (``l1``) error of
    ``image`` against ``x``, both ``(B, C, H, W)``."""
    diff = (image - x).flatten(1)
    return diff.pow(2).mean(dim=1) if loss == "l2" else diff.abs().mean(dim=1)


def grad_or_zero(
    outputs: Sequence[Tensor],
    inputs: Sequence[Tensor],
    grad_outputs: Sequence[Tensor] | None = None,
) -> list[Tensor]:
    """``torch.autograd.grad`` with unused inputs given zero gradient."""
    gs = torch.autograd.grad(outputs, inputs, grad_outputs=grad_outputs, allow_unused=True)
    return [torch.zeros_like(i) if g is None else g for i, g in zip(inputs, gs, strict=True)]


def _slots(state: State) -> list[str]:
    """The rule's slot names in ``state`` (everything but the running image average)."""
    return [slot for slot in state if slot != "ema"]


def _state_tensors(state: State) -> list[Tensor]:
    """The optimizer-state tensors that carry over between steps, slot by slot."""
    return [v for slot in _slots(state) for v in state[slot].values()]


def _state_from(names: list[str], tensors: list[Tensor], template: State) -> State:
    """The inverse of ``_state_tensors`` for a state shaped like ``template``."""
    n = len(names)
    state: State = {"ema": None}
    for i, slot in enumerate(_slots(template)):
        state[slot] = dict(zip(names, tensors[i * n : (i + 1) * n], strict=True))
    return state


@dataclass
class _HyperLeaves:
    """The step's hyper-parameter tensors as leaves; gradients are summed over segments."""

    hyper: Hyper
    tensors: list[Tensor]  # [lr (T, P), momentum, tv_weight, fourier_b (k, 2)?]


def _hyper_leaves(hyper: Hyper) -> _HyperLeaves:
    lr = hyper.lr.detach().requires_grad_()
    mu = hyper.momentum.detach().requires_grad_()
    tv = hyper.tv_weight.detach().requires_grad_()
    tensors = [lr, mu, tv]
    fb = None
    if hyper.fourier_b is not None:
        fb = hyper.fourier_b.detach().requires_grad_()
        tensors.append(fb)
    h = replace(hyper, lr=lr, momentum=mu, tv_weight=tv, fourier_b=fb)
    return _HyperLeaves(h, tensors)


def task_checkpointed(
    init: MetaInit,
    leaves: dict[str, Tensor],
    task: tuple,
    steps: int,
    segment: int,
    loss: str,
) -> tuple[Tensor, dict[str, Tensor]]:
    x, op, y = task
    # The graph from the meta-parameters to the step's hyper-parameters (exp, s·basis,
    # with_steps) is built once and used once, after all segments.
    params0, hyper_graph = prepare(
        init, op.in_shape, steps=steps, create_graph=True, problem=(op, y)
    )
    hl = _hyper_leaves(hyper_graph)
    hyper = hl.hyper
    names = list(params0)
    gen = hyper.generator

    # Forward without a graph; keep (θ_t, state_t, RNG state) at each segment start.
    fwd = replace(hyper, create_graph=False)
    params = {k: v.detach() for k, v in params0.items()}
    state = init_state(params, fwd)
    saved: list[tuple[int, Params, State, Tensor | None]] = []
    with torch.no_grad():
        for t0 in range(0, steps, segment):
            saved.append((t0, params, state, gen.get_state() if gen is not None else None))
            params, state = advance(params, state, y, op, fwd, t0, min(t0 + segment, steps))

    # Adjoint of θ_T from the outer loss; the final forward also depends on B.
    with torch.enable_grad():
        p_t = [params[k].detach().requires_grad_() for k in names]
        value = outer_losses(output(dict(zip(names, p_t, strict=True)), hyper), x, loss).mean()
        gs = grad_or_zero([value], p_t + hl.tensors)
    adj_p = gs[: len(names)]
    hyper_grads = gs[len(names) :]
    adj_s = [torch.zeros_like(s) for s in _state_tensors(state)]
    del params, state, p_t

    # Backward: segments last-first; each is recomputed with a graph, used once, freed.
    for t0, p_saved, s_saved, rng in reversed(saved):
        t1 = min(t0 + segment, steps)
        if gen is not None:
            gen.set_state(rng)
        with torch.enable_grad():
            p_in = [p_saved[k].detach().requires_grad_() for k in names]
            s_in = [s.detach().requires_grad_() for s in _state_tensors(s_saved)]
            p = dict(zip(names, p_in, strict=True))
            s = _state_from(names, s_in, s_saved)
            p, s = advance(p, s, y, op, hyper, t0, t1)
            outs = [p[k] for k in names] + _state_tensors(s)
            gs = grad_or_zero(outs, p_in + s_in + hl.tensors, grad_outputs=adj_p + adj_s)
        n_p, n_s = len(p_in), len(s_in)
        adj_p, adj_s = gs[:n_p], gs[n_p : n_p + n_s]
        hyper_grads = [a + b for a, b in zip(hyper_grads, gs[n_p + n_s :], strict=True)]
        del p, s, outs, gs

    # Chain to the meta-parameters: θ_0 = W (identity) and the hyper graph.
    grads: dict[str, Tensor] = {}
    for k, g in zip(names, adj_p, strict=True):
        if f"weights.{k}" in leaves:
            grads[f"weights.{k}"] = g
    hyper_names = [n for n in HYPER_NAMES if n in leaves]
    if hyper_names:
        graph_t = [hyper_graph.lr, hyper_graph.momentum, hyper_graph.tv_weight]
        if hyper_graph.fourier_b is not None:
            graph_t.append(hyper_graph.fourier_b)
        pairs = [(o, g) for o, g in zip(graph_t, hyper_grads, strict=True) if o.requires_grad]
        hg = grad_or_zero(
            [o for o, _ in pairs], [leaves[n] for n in hyper_names], [g for _, g in pairs]
        )
        grads.update(zip(hyper_names, hg, strict=True))
    return value.detach(), grads
