"""The inner step: one functional fitting step, used by inference and meta-training
(the loop around it, with restores, callbacks and results, is ``metadip.loop``).

``step(params, state, y, op, hyper, t) -> (params, state, loss)`` is a pure
function of tensors (``torch.func.functional_call``): no module state changes,
so it can run eagerly, be captured in a CUDA graph, or be differentiated
through with ``hyper.create_graph=True``. There is exactly one implementation.

Loss per image b (summed over the batch, so items stay independent):
``L_b = mean_i (op(x_b) - y_b)_i^2 + tv_weight * tv(x_b) / (C·H·W)`` with ``x = f_θ(z)``;
with ``loss="sure"`` (denoising, image-input networks) the gradient is that of
Stein's unbiased risk estimate instead (``sure_term``).

A batch of B images is fitted either by one network (``groups = 1``: one set of
parameters, the meta-training case) or by B independent networks in one pass
(``groups = B``: every parameter stacked ``(B, *shape)``, the network run as
grouped convolutions), which equals B separate fits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from metadip.classical.solvers import solver_for
from metadip.dihedral import transform, untransform
from metadip.guide import guide_input
from metadip.init import MetaInit
from metadip.losses import fit_losses, sure_term, sure_weights
from metadip.netconfig import NetConfig
from metadip.networks import (
    build_network,
    coordinate_grid,
    decoder_input_size,
    network_input,
    noise_input,
)
from metadip.posterior import chain_generators, draw, langevin_step
from metadip.rules import get_rule

__all__ = [
    "Hyper",
    "advance",
    "Params",
    "State",
    "data_loss",
    "ensemble_output",
    "init_state",
    "item_losses",
    "output",
    "per_item",
    "prepare",
    "step",
    "with_guide",
]

Params = dict[str, Tensor]
State = dict[str, Any]


@dataclass
class Hyper:
    """Everything a step needs besides parameters, state and data.

    ``fixed``: ``(B, C0, H, W)`` fixed input part (noise or coordinates);
    ``fourier_b``: ``(k, 2)`` frequencies or None; ``lr``: ``(T, P)`` learning
    rates per step and parameter tensor; ``momentum`` / ``tv_weight``: scalars.
    ``groups``: 1, or B for B independent networks with parameters ``(B, *shape)``.
    ``lr_scale``: a factor on every rate, a float or one per problem ``(B,)``.
    ``mono``: a colour network fitting 1-channel images: its output channels are
    averaged (and a guide image is repeated to the network's channels).
    ``loss``: ``"mse"`` or ``"sure"``; ``sure_eps``: the finite-difference step of
    SURE's Monte-Carlo divergence; ``sure``: the operator's ``(M, σ²)``
    (``losses.sure_weights``) when prepared with the problem, else computed per step.
    ``solver``: the classical solver the network output
    starts (``metadip.classical``), bound to the problem, or None.
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
    lr_scale: float | Tensor = 1.0
    groups: int = 1
    create_graph: bool = False
    mono: bool = False
    loss: str = "mse"
    sure_eps: float = 1e-3
    sure: tuple[Tensor, Tensor] | None = None
    generator: torch.Generator | None = None
    # Chains (metadip.posterior): one generator per item instead of ``generator``, and
    # the Langevin noise scale and weight-decay prior of their update (0: none).
    generators: tuple[torch.Generator, ...] | None = None
    langevin: float = 0.0
    prior: float = 0.0
    # First-order meta-gradients: keep the update's graph (θ, m, lr, momentum) but treat
    # the inner gradient g as a constant (no Hessian terms). Only read with create_graph.
    first_order: bool = False
    solver: Callable[[Tensor], Tensor] | None = None
    # The final image's geometric self-ensemble size (``ensemble_output``; 1: none).
    ensemble: int = 1


def _net_input(hyper: Hyper, jitter: bool) -> Tensor:
    fixed = hyper.fixed
    if jitter and hyper.jitter > 0:
        # One draw shared by the batch (item b sees the noise a fit of b alone would see),
        # or one per chain.
        noise = draw(hyper.generator, hyper.generators, fixed.shape[1:], fixed)
        fixed = fixed + hyper.jitter * noise
    return network_input(hyper.config, fixed, hyper.fourier_b)


def _apply(params: Params, hyper: Hyper, inp: Tensor) -> Tensor:
    """``f_θ(inp)``: ``(B, Cin, H, W) -> (B, C, H, W)``; with ``groups = B`` item b goes
    through network b (stacked parameters flattened to grouped-convolution weights),
    then through the classical solver when the init has one."""
    out = _network(params, hyper, inp)
    return out if hyper.solver is None else hyper.solver(out)


def _network(params: Params, hyper: Hyper, inp: Tensor) -> Tensor:
    """``_apply`` without the classical solver."""
    if hyper.groups == 1:
        out = functional_call(hyper.net, params, (inp,))
    else:
        h, w = inp.shape[-2:]
        flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in params.items()}
        out = functional_call(hyper.net, flat, (inp.reshape(1, -1, h, w),))
        out = out.view(hyper.groups, -1, *out.shape[-2:])
    return out.mean(dim=1, keepdim=True) if hyper.mono else out


def output(params: Params, hyper: Hyper) -> Tensor:
    """The network's image ``f_θ(z)``, ``(B, C, H, W)``, without input jitter."""
    return _apply(params, hyper, _net_input(hyper, jitter=False))


def ensemble_output(params: Params, hyper: Hyper) -> Tensor:
    """The geometric self-ensemble ``(1/n) Σ_i T_i⁻¹ f_θ(T_i z)`` over the first
    ``n = hyper.ensemble`` symmetries of ``metadip.dihedral`` (then the classical solver,
    if any): ``output`` for n = 1. For image-input networks, whose input z is an image."""
    if hyper.ensemble == 1:
        return output(params, hyper)
    inp = _net_input(hyper, jitter=False)
    total = _network(params, hyper, inp)
    for i in range(1, hyper.ensemble):
        total = total + untransform(_network(params, hyper, transform(inp, i)), i)
    out = total / hyper.ensemble
    return out if hyper.solver is None else hyper.solver(out)


def item_losses(x: Tensor, y: Tensor, op: Any, hyper: Hyper, first_order: bool = False) -> Tensor:
    """Per image b: the data fit ``mean((op(x_b) - y_b)^2) + tv_weight · tv(x_b) / (C·H·W)``,
    ``(B,)`` (``metadip.losses.fit_losses`` with the step's weights; ``first_order`` lets
    it use the operator's one-pass residual)."""
    return fit_losses(x, y, op, hyper.tv_weight, hyper.tv_eps, first_order)


def data_loss(x: Tensor, y: Tensor, op: Any, hyper: Hyper) -> Tensor:
    """``Σ_b item_losses(x, y)_b``: a scalar whose gradient leaves the items independent."""
    return item_losses(x, y, op, hyper).sum()


def init_state(params: Params, hyper: Hyper) -> State:
    """Zero optimizer state for ``hyper.rule``: its slots ``{slot: {name: tensor}}`` and
    the running image average ``"ema"`` (None until the first step)."""
    return {**get_rule(hyper.rule).init(params), "ema": None}


def step(
    params: Params, state: State, y: Tensor, op: Any, hyper: Hyper, t: int
) -> tuple[Params, State, Tensor]:
    """One fitting step at step index ``t``; returns new params, new state and the loss
    of each image ``(B,)`` at the *incoming* params (detached; the data fit, also when
    the gradient is SURE's, whose value is near zero and noisy).

    The update is ``hyper.rule``'s transform (``metadip.rules``) at the rates ``lr[t]``.
    Chains add ``hyper.prior · θ`` to g and Langevin noise to θ (``metadip.posterior``).
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
        inp = _net_input(hyper, jitter=True)
        x = _apply(current, hyper, inp)
        losses = item_losses(x, y, op, hyper, first_order=not second_order)
        objective = losses
        if hyper.loss == "sure":
            objective = losses + sure_term(
                lambda i: _apply(current, hyper, i),
                inp,
                x,
                hyper.sure if hyper.sure is not None else sure_weights(op, x),
                hyper.config.out_channels,
                hyper.sure_eps,
                draw(hyper.generator, hyper.generators, y.shape[1:], y),
            )
        grads = torch.autograd.grad(objective.sum(), leaves, create_graph=second_order)

    row = min(t, hyper.lr.shape[0] - 1)
    lrs = hyper.lr[row]
    rule = get_rule(hyper.rule)
    new_params: Params = {}
    new_state: State = {**{slot: {} for slot in rule.slots}, "ema": state.get("ema")}
    for i, (k, p, g) in enumerate(zip(names, leaves, grads, strict=True)):
        if not hyper.create_graph:
            p = p.detach()
        elif hyper.first_order:
            p = params[k]
        lr = lrs[i] * per_item(hyper.lr_scale, p, hyper.groups)
        if hyper.prior > 0:
            g = g + hyper.prior * p
        slots = {slot: state[slot][k] for slot in rule.slots}
        new_params[k], slots = rule.update(p, g, slots, lr, t, hyper)
        if hyper.langevin > 0 and hyper.generators:
            new_params[k] = langevin_step(
                new_params[k], p, hyper.langevin, hyper.generators, hyper.groups
            )
        for slot, value in slots.items():
            new_state[slot][k] = value
    if hyper.ema > 0:
        # Debiased like Adam's moments, so early steps do not dominate short fits.
        xo = x if hyper.create_graph else x.detach()
        prev = state["ema"]
        if prev is None:
            prev = (torch.zeros_like(xo), xo.new_zeros(xo.shape[0], 1, 1, 1))
        acc, norm = prev
        new_state["ema"] = (
            hyper.ema * acc + (1 - hyper.ema) * xo,
            hyper.ema * norm + (1 - hyper.ema),
        )
    return new_params, new_state, losses.detach()


def advance(
    params: Params, state: State, y: Tensor, op: Any, hyper: Hyper, start: int, stop: int
) -> tuple[Params, State]:
    """Steps ``start, ..., stop − 1`` of ``step`` with no restores: the plain recurrence
    that meta-gradients differentiate (``loop.run_loop`` adds the per-problem restores,
    callbacks and losses of a fit)."""
    for t in range(start, stop):
        params, state, _ = step(params, state, y, op, hyper, t)
    return params, state


def per_item(value: float | Tensor, like: Tensor, groups: int) -> float | Tensor:
    """A per-problem ``(B,)`` value shaped to broadcast against a parameter-like tensor:
    along its stacked dim 0 for ``groups = B``, or as a scalar for one network."""
    if not isinstance(value, Tensor):
        return value
    if groups == 1:
        return value.reshape(())
    return value.view(-1, *([1] * (like.dim() - 1)))


def with_guide(hyper: Hyper, op: Any, y: Tensor) -> Hyper:
    """``hyper`` with its guide channels replaced by ``guide_input(op, y)`` (a fit of an
    Educated-DIP init on new measurements, e.g. a CUDA-graph replay)."""
    guide = guide_input(hyper.config, op, y)
    rest = hyper.fixed[:, hyper.config.guide_channels :]
    return replace(hyper, fixed=torch.cat([guide.to(rest.dtype), rest], dim=1))


def prepare(
    init: MetaInit,
    in_shape: tuple[int, int, int],
    *,
    batch: int = 1,
    steps: int | None = None,
    seed: int = 0,
    create_graph: bool = False,
    guide: Tensor | None = None,
    seeds: Sequence[int] | None = None,
    langevin: float = 0.0,
    prior: float = 0.0,
    problem: tuple[Any, Tensor] | None = None,
) -> tuple[Params, Hyper]:
    """Initial parameters and the ``Hyper`` for images of ``in_shape`` ``(C, H, W)``.

    ``batch`` > 1: that many independent problems fitted in one pass, each from the
    same initial weights (stacked ``(batch, *shape)``) and the same jitter stream, so
    item b equals a fit of b alone. Tensors live on ``init``'s device and dtype.
    ``seed`` drives the input jitter. ``guide``: the network input of an Educated-DIP
    init, ``guide_input(init.config, op, y)``; required by those, refused by others.
    ``seeds``: one per item, for chains (``metadip.posterior``): item i draws its own
    noise streams, seeded ``seeds[i]``, and steps with Langevin noise of scale
    ``langevin`` and weight decay ``prior``. ``problem``: ``(op, y)`` with y
    ``(batch, *op.out_shape)``, which an init with a classical solver needs (the solver
    runs on that problem); ignored by others.
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
    c, h, w = in_shape
    cfg = init.config
    # A colour init also fits gray images (channel mean of its output); nothing else fits.
    mono = c == 1 and cfg.out_channels == 3
    if cfg.out_channels != c and not mono:
        raise ValueError(
            f"the initialization makes {cfg.out_channels}-channel images but the operator "
            f"expects {c} channels (in_shape {tuple(in_shape)}); a 3-channel init also "
            "fits 1-channel images"
        )
    with torch.device("meta"):
        net = build_network(cfg, groups=batch)
    if hasattr(net, "check_size"):
        net.check_size(h, w)
    dtype, device = init.dtype, init.device
    if cfg.kind == "siren":
        fixed = coordinate_grid(h, w, dtype, device)
    elif cfg.kind == "decoder":
        small = decoder_input_size(h, w, cfg.depth)
        fixed = noise_input(cfg.width, *small, init.z_seed, dtype, device)
    else:
        fixed = noise_input(cfg.noise_channels, h, w, init.z_seed, dtype, device)
    fixed = fixed.expand(batch, -1, -1, -1)
    if cfg.guided:
        want = (batch, cfg.guide_channels, h, w)
        if guide is None or tuple(guide.shape) != want:
            got = None if guide is None else tuple(guide.shape)
            raise ValueError(
                f"an Educated-DIP init needs guide=guide_input(...) of shape {want}, got {got}"
            )
        fixed = torch.cat([guide.to(device=device, dtype=dtype), fixed], dim=1)
    elif guide is not None:
        raise ValueError("guide is only used by an init whose network input is an image")
    solver = None
    if cfg.solver != "none":
        if problem is None:
            raise ValueError(
                f"an init with the classical solver {cfg.solver!r} needs problem=(op, y)"
            )
        solver = solver_for(cfg, *problem)
    sure = None
    if init.loss == "sure" and problem is not None:
        sure = sure_weights(problem[0], torch.zeros(batch, c, h, w, dtype=dtype, device=device))
    if steps is not None and steps != init.steps:
        init = init.with_steps(steps)
    gen, gens = None, None
    if seeds is not None:
        if len(seeds) != batch:
            raise ValueError(f"seeds must hold one seed per item ({batch}), got {len(seeds)}")
        gens = chain_generators(seeds, device)
    elif init.jitter > 0 or init.loss == "sure":
        gen = torch.Generator(device=device).manual_seed(int(seed))
    hyper = Hyper(
        net=net,
        config=cfg,
        fixed=fixed,
        fourier_b=init.fourier_b() if cfg.num_fourier else None,
        lr=init.log_lr.exp(),
        momentum=init.momentum,
        tv_weight=init.tv_weight,
        rule=init.rule,
        jitter=init.jitter,
        ema=init.ema,
        groups=batch,
        create_graph=create_graph,
        mono=mono,
        loss=init.loss,
        generator=gen,
        generators=gens,
        langevin=langevin if gens else 0.0,
        prior=prior if gens else 0.0,
        solver=solver,
        sure=sure,
        ensemble=init.ensemble,
    )
    params = dict(init.weights)
    if batch > 1:
        params = {k: v.expand(batch, *v.shape).contiguous() for k, v in params.items()}
    return params, hyper
