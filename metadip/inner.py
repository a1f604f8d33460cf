"""The inner loop: one functional fitting step, used by inference and meta-training.

``step(params, state, y, op, hyper, t) -> (params, state, loss)`` is a pure
function of tensors (``torch.func.functional_call``): no module state changes,
so it can run eagerly, be captured in a CUDA graph, or be differentiated
through with ``hyper.create_graph=True``. There is exactly one implementation.

Loss per image b (summed over the batch, so items stay independent):
``L_b = mean_i (op(x_b) - y_b)_i^2 + tv_weight * tv(x_b) / (C·H·W)`` with ``x = f_θ(z)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call
from tqdm.auto import tqdm

from metadip import functional
from metadip.init import MetaInit
from metadip.networks import NetConfig, build_network, coordinate_grid, network_input, noise_input

__all__ = ["Hyper", "StepInfo", "fit", "init_state", "output", "prepare", "step"]

Params = dict[str, Tensor]
State = dict[str, Any]

# A vanilla-DIP step whose loss jumps by more than this factor (5 dB) is undone,
# as in the original DIP code.
BACKTRACK_FACTOR = 10 ** (5 / 10)


@dataclass
class Hyper:
    """Everything a step needs besides parameters, state and data.

    ``fixed``: ``(B, C0, H, W)`` fixed input part (noise or coordinates);
    ``fourier_b``: ``(k, 2)`` frequencies or None; ``lr``: ``(T, P)`` learning
    rates per step and parameter tensor; ``momentum`` / ``tv_weight``: scalars.
    """

    net: nn.Module
    config: NetConfig
    fixed: Tensor
    fourier_b: Tensor | None
    lr: Tensor
    momentum: Tensor
    tv_weight: Tensor
    rule: str = "sgd"
    jitter: float = 0.0
    ema: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    tv_eps: float = 1e-6
    lr_scale: float = 1.0
    create_graph: bool = False
    generator: torch.Generator | None = None
    # First-order meta-gradients: keep the update's graph (θ, m, lr, momentum) but treat
    # the inner gradient g as a constant (no Hessian terms). Only read with create_graph.
    first_order: bool = False


def _net_input(hyper: Hyper, jitter: bool) -> Tensor:
    fixed = hyper.fixed
    if jitter and hyper.jitter > 0:
        g = hyper.generator
        noise = torch.randn(
            fixed.shape, generator=g, dtype=fixed.dtype, device=g.device if g else fixed.device
        )
        fixed = fixed + hyper.jitter * noise.to(fixed.device)
    return network_input(hyper.config, fixed, hyper.fourier_b)


def output(params: Params, hyper: Hyper) -> Tensor:
    """The network's image ``f_θ(z)``, ``(B, C, H, W)``, without input jitter."""
    return functional_call(hyper.net, params, (_net_input(hyper, jitter=False),))


def data_loss(x: Tensor, y: Tensor, op: Any, hyper: Hyper) -> Tensor:
    """Σ_b [mean((op(x_b) - y_b)^2) + tv_weight · tv(x_b) / (C·H·W)] (a scalar)."""
    residual = op.forward(x) - y
    fit = residual.pow(2).flatten(1).mean(dim=1)
    reg = functional.tv(x, hyper.tv_eps) / x[0].numel()
    return (fit + hyper.tv_weight * reg).sum()


def init_state(params: Params, hyper: Hyper) -> State:
    """Zero optimizer state for ``hyper.rule``."""
    state: State = {"m": {k: torch.zeros_like(v) for k, v in params.items()}, "ema": None}
    if hyper.rule == "adam":
        state["v"] = {k: torch.zeros_like(v) for k, v in params.items()}
    return state


def step(
    params: Params, state: State, y: Tensor, op: Any, hyper: Hyper, t: int
) -> tuple[Params, State, Tensor]:
    """One fitting step at step index ``t``; returns new params, new state and the loss
    at the *incoming* params (detached).

    sgd:  m ← μ m + g;  θ ← θ − lr[t] m.
    adam: m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²;  θ ← θ − lr[t] m̂ / (√v̂ + ε).
    """
    names = list(params)
    second_order = hyper.create_graph and not hyper.first_order
    with torch.enable_grad():
        if second_order:
            leaves = [
                p if p.requires_grad else p.detach().requires_grad_() for p in params.values()
            ]
        else:
            leaves = [p.detach().requires_grad_() for p in params.values()]
        current = dict(zip(names, leaves, strict=True))
        x = functional_call(hyper.net, current, (_net_input(hyper, jitter=True),))
        loss = data_loss(x, y, op, hyper)
        grads = torch.autograd.grad(loss, leaves, create_graph=second_order)

    row = min(t, hyper.lr.shape[0] - 1)
    lrs = hyper.lr[row] * hyper.lr_scale
    new_params: Params = {}
    new_state: State = {"m": {}, "ema": state.get("ema")}
    if hyper.rule == "adam":
        b1, b2 = hyper.betas
        new_state["v"] = {}
        c1, c2 = 1 - b1 ** (t + 1), 1 - b2 ** (t + 1)
    for i, (k, p, g) in enumerate(zip(names, leaves, grads, strict=True)):
        if not hyper.create_graph:
            p = p.detach()
        elif hyper.first_order:
            p = params[k]
        if hyper.rule == "sgd":
            m = hyper.momentum * state["m"][k] + g
            new_params[k] = p - lrs[i] * m
        else:
            m = b1 * state["m"][k] + (1 - b1) * g
            v = b2 * state["v"][k] + (1 - b2) * g * g
            new_state["v"][k] = v
            new_params[k] = p - lrs[i] * (m / c1) / (torch.sqrt(v / c2) + hyper.adam_eps)
        new_state["m"][k] = m
    if hyper.ema > 0:
        # Debiased like Adam's moments, so early steps do not dominate short fits.
        xo = x if hyper.create_graph else x.detach()
        prev = state["ema"]
        acc, norm = (0.0, 0.0) if prev is None else prev
        new_state["ema"] = (
            hyper.ema * acc + (1 - hyper.ema) * xo,
            hyper.ema * norm + (1 - hyper.ema),
        )
    return new_params, new_state, loss.detach()


def prepare(
    init: MetaInit,
    in_shape: tuple[int, int, int],
    *,
    batch: int = 1,
    steps: int | None = None,
    seed: int = 0,
    create_graph: bool = False,
) -> tuple[Params, Hyper]:
    """Initial parameters and the ``Hyper`` for images of ``in_shape`` ``(C, H, W)``.

    Tensors live on ``init``'s device and dtype. ``seed`` drives the input jitter.
    """
    c, h, w = in_shape
    cfg = init.config
    if cfg.out_channels != c:
        raise ValueError(
            f"the initialization makes {cfg.out_channels}-channel images but the operator "
            f"expects {c} channels (in_shape {tuple(in_shape)})"
        )
    with torch.device("meta"):
        net = build_network(cfg)
    if hasattr(net, "check_size"):
        net.check_size(h, w)
    dtype, device = init.dtype, init.device
    if cfg.kind == "siren":
        fixed = coordinate_grid(h, w, dtype, device)
    else:
        fixed = noise_input(cfg.noise_channels, h, w, init.z_seed, dtype, device)
    if steps is not None and steps != init.steps:
        init = init.with_steps(steps)
    gen = None
    if init.jitter > 0:
        gen = torch.Generator(device=device).manual_seed(int(seed))
    hyper = Hyper(
        net=net,
        config=cfg,
        fixed=fixed.expand(batch, -1, -1, -1),
        fourier_b=init.fourier_b() if cfg.num_fourier else None,
        lr=init.log_lr.exp(),
        momentum=init.momentum,
        tv_weight=init.tv_weight,
        rule=init.rule,
        jitter=init.jitter,
        ema=init.ema,
        create_graph=create_graph,
        generator=gen,
    )
    params = dict(init.weights)
    return params, hyper


@dataclass
class StepInfo:
    """What a callback sees after each accepted step."""

    step: int
    loss: float
    params: Params
    hyper: Hyper

    def image(self) -> Tensor:
        """The current image ``f_θ(z)`` (one extra forward pass; call only when needed)."""
        with torch.no_grad():
            return output(self.params, self.hyper)


@dataclass
class FitResult:
    image: Tensor
    losses: list[float]
    restored: list[int]


def _finite(t: Tensor) -> bool:
    return bool(torch.isfinite(t).all())


def _result(params: Params, state: State, hyper: Hyper) -> Tensor:
    """The reconstruction: the output average when the rule keeps one, else f_θ(z)."""
    if hyper.ema > 0 and state["ema"] is not None:
        acc, norm = state["ema"]
        return acc / norm
    return output(params, hyper)


def fit(
    params: Params,
    y: Tensor,
    op: Any,
    hyper: Hyper,
    steps: int,
    *,
    callback: Callable[[StepInfo], None] | None = None,
    progress: bool = False,
    desc: str = "fitting",
) -> FitResult:
    """Runs ``steps`` steps from ``params``. A non-finite loss (or, for vanilla DIP, a
    loss jump over 5 dB) restores the last good parameters and halves the step size;
    the step indices where that happened are in ``restored``."""
    state = init_state(params, hyper)
    good = (params, state)
    last = math.inf
    losses: list[float] = []
    restored: list[int] = []
    backtrack = BACKTRACK_FACTOR if hyper.rule == "adam" else math.inf
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    for t in bar:
        new_params, new_state, loss = step(params, state, y, op, hyper, t)
        value = float(loss)
        losses.append(value)
        if not math.isfinite(value) or value > backtrack * last:
            params, state = good
            hyper = replace(hyper, lr_scale=hyper.lr_scale * 0.5)
            restored.append(t)
            continue
        good, last = (params, state), value
        params, state = new_params, new_state
        if progress:
            bar.set_postfix(loss=f"{value:.3e}")
        if callback is not None:
            callback(StepInfo(t, value, params, hyper))
    with torch.no_grad():
        image = _result(params, state, hyper)
        if not _finite(image):
            image = _result(*good, hyper)
            restored.append(steps)
        if not _finite(image):
            raise FloatingPointError(
                "fitting produced no finite image even from the last good parameters; "
                "check the operator and the measurement scale"
            )
    return FitResult(image.detach(), losses, restored)
