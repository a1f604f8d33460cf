"""The inner loop: one functional fitting step, used by inference and meta-training.

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

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call
from tqdm.auto import tqdm

from metadip.guide import guide_input
from metadip.init import MetaInit
from metadip.losses import fit_losses, sure_term
from metadip.networks import (
    NetConfig,
    build_network,
    coordinate_grid,
    decoder_input_size,
    network_input,
    noise_input,
)
from metadip.posterior import chain_generators, draw, langevin_step
from metadip.rules import get_rule

__all__ = [
    "FitResult",
    "Hyper",
    "StepInfo",
    "Trace",
    "data_loss",
    "fit",
    "init_state",
    "item_losses",
    "output",
    "prepare",
    "run_loop",
    "finish",
    "step",
    "with_guide",
]

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
    ``groups``: 1, or B for B independent networks with parameters ``(B, *shape)``.
    ``lr_scale``: a factor on every rate, a float or one per problem ``(B,)``.
    ``mono``: a colour network fitting 1-channel images: its output channels are
    averaged (and a guide image is repeated to the network's channels).
    ``loss``: ``"mse"`` or ``"sure"``; ``sure_eps``: the finite-difference step of
    SURE's Monte-Carlo divergence.
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
    generator: torch.Generator | None = None
    # Chains (metadip.posterior): one generator per item instead of ``generator``, and
    # the Langevin noise scale and weight-decay prior of their update (0: none).
    generators: tuple[torch.Generator, ...] | None = None
    langevin: float = 0.0
    prior: float = 0.0
    # First-order meta-gradients: keep the update's graph (θ, m, lr, momentum) but treat
    # the inner gradient g as a constant (no Hessian terms). Only read with create_graph.
    first_order: bool = False


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
    through network b (stacked parameters flattened to grouped-convolution weights)."""
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


def item_losses(x: Tensor, y: Tensor, op: Any, hyper: Hyper) -> Tensor:
    """Per image b: the data fit ``mean((op(x_b) - y_b)^2) + tv_weight · tv(x_b) / (C·H·W)``,
    ``(B,)`` (``metadip.losses.fit_losses`` with the step's weights)."""
    return fit_losses(x, y, op, hyper.tv_weight, hyper.tv_eps)


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
        losses = item_losses(x, y, op, hyper)
        objective = losses
        if hyper.loss == "sure":
            objective = losses + sure_term(
                lambda i: _apply(current, hyper, i),
                inp,
                x,
                y,
                op,
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
        lr = lrs[i] * _per_item(hyper.lr_scale, p, hyper.groups)
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


def _per_item(value: float | Tensor, like: Tensor, groups: int) -> float | Tensor:
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
) -> tuple[Params, Hyper]:
    """Initial parameters and the ``Hyper`` for images of ``in_shape`` ``(C, H, W)``.

    ``batch`` > 1: that many independent problems fitted in one pass, each from the
    same initial weights (stacked ``(batch, *shape)``) and the same jitter stream, so
    item b equals a fit of b alone. Tensors live on ``init``'s device and dtype.
    ``seed`` drives the input jitter. ``guide``: the network input of an Educated-DIP
    init, ``guide_input(init.config, op, y)``; required by those, refused by others.
    ``seeds``: one per item, for chains (``metadip.posterior``): item i draws its own
    noise streams, seeded ``seeds[i]``, and steps with Langevin noise of scale
    ``langevin`` and weight decay ``prior``.
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
    )
    params = dict(init.weights)
    if batch > 1:
        params = {k: v.expand(batch, *v.shape).contiguous() for k, v in params.items()}
    return params, hyper


@dataclass
class StepInfo:
    """What a callback sees after each step in which at least one problem was accepted.

    ``loss``: the loss at the step's incoming parameters (the mean over a batch);
    ``losses``: one per problem; ``first``: the index of the first problem of this
    pass in the caller's batch (``reconstruct`` fits a batch in passes of ``batch_size``).
    """

    step: int
    loss: float
    params: Params
    hyper: Hyper
    losses: list[float] = field(default_factory=list)
    first: int = 0
    _image: Tensor | None = field(default=None, repr=False)

    def image(self) -> Tensor:
        """The current image ``f_θ(z)`` ``(B, C, H, W)`` (one extra forward pass, done once
        per step however many callers ask; call only when needed)."""
        if self._image is None:
            with torch.no_grad():
                self._image = output(self.params, self.hyper)
        return self._image


@dataclass
class FitResult:
    """``image``: ``(B, C, H, W)``; ``losses`` / ``restored``: one list per problem;
    ``psnr``: per problem, the PSNR after each step against ``x_true`` (None without)."""

    image: Tensor
    losses: list[list[float]]
    restored: list[list[int]]
    psnr: list[list[float]] | None = None


def _result(params: Params, state: State, hyper: Hyper) -> Tensor:
    """The reconstruction: the output average when the rule keeps one, else f_θ(z)."""
    if hyper.ema > 0 and state["ema"] is not None:
        acc, norm = state["ema"]
        return acc / norm
    return output(params, hyper)


def _select(take: Tensor, new: Any, old: Any, groups: int, batch_dim: bool = False) -> Any:
    """Per problem, ``new`` where ``take`` ``(B,)`` is true and ``old`` elsewhere, through
    the nesting of params / state (``old`` None stands for zeros). Parameter-like
    tensors follow ``groups``; the output average always has the batch in dim 0."""
    if isinstance(new, dict):
        return {
            k: _select(take, v, None if old is None else old[k], groups, batch_dim or k == "ema")
            for k, v in new.items()
        }
    if isinstance(new, tuple):
        olds = (None,) * len(new) if old is None else old
        return tuple(_select(take, a, b, groups, batch_dim) for a, b in zip(new, olds, strict=True))
    if new is None:
        return old
    if old is None:
        old = torch.zeros_like(new)
    mask = _per_item(take, new, new.shape[0] if batch_dim else groups)
    return torch.where(mask, new, old)


@dataclass
class Trace:
    """A finished loop on the device, before any host-side check: the final and the last
    good parameters and state, and the ``(B, T)`` losses and restore flags."""

    params: Params
    state: State
    good_params: Params
    good_state: State
    hyper: Hyper
    losses: Tensor
    bad: Tensor
    psnr: Tensor | None = None


def run_loop(
    params: Params,
    y: Tensor,
    op: Any,
    hyper: Hyper,
    steps: int,
    *,
    callback: Callable[[StepInfo], None] | None = None,
    bar: Any = None,
    x_true: Tensor | None = None,
) -> Trace:
    """The fitting loop with per-problem restores done on the device (``torch.where``):
    no host synchronization unless ``callback`` or a progress ``bar`` is given, so it can
    be captured in a CUDA graph. A ``callback`` that returns True stops the loop.
    ``x_true`` ``(B, C, H, W)``: after each step, the PSNR of the image the fit would
    return then (clamped to [0, 1]) is recorded on the device (one more forward pass)."""
    b = y.shape[0]
    state = init_state(params, hyper)
    good_params, good_state = params, state
    last = y.new_full((b,), math.inf)
    scale = y.new_ones(b)
    hyper = replace(hyper, lr_scale=scale)
    backtrack = BACKTRACK_FACTOR if get_rule(hyper.rule).backtrack else math.inf
    loss_rows: list[Tensor] = []
    bad_rows: list[Tensor] = []
    psnr_rows: list[Tensor] = []
    for t in range(steps):
        new_params, new_state, loss = step(params, state, y, op, hyper, t)
        bad = ~torch.isfinite(loss) | (loss > backtrack * last)
        ok = ~bad
        loss_rows.append(loss)
        bad_rows.append(bad)
        # Accepted problems move on (their incoming params become the last good ones);
        # the others go back to their last good params with half the step size.
        good_params = _select(ok, params, good_params, hyper.groups)
        good_state = _select(ok, state, good_state, hyper.groups)
        last = torch.where(ok, loss, last)
        params = _select(ok, new_params, good_params, hyper.groups)
        state = _select(ok, new_state, good_state, hyper.groups)
        scale = torch.where(ok, scale, 0.5 * scale)
        hyper = replace(hyper, lr_scale=scale)
        if x_true is not None:
            psnr_rows.append(_psnr(params, state, hyper, x_true))
        if bar is not None:
            bar.update(1)
            if t % 10 == 9 or t == steps - 1:
                bar.set_postfix(loss=f"{float(loss.mean()):.3e}")
        if callback is not None:
            values, flags = loss.tolist(), bad.tolist()
            # A callback that returns True ends the fit after this step (automatic stopping).
            if not all(flags) and callback(StepInfo(t, sum(values) / b, params, hyper, values)):
                break
    empty = y.new_zeros(b, 0)
    return Trace(
        params,
        state,
        good_params,
        good_state,
        hyper,
        torch.stack(loss_rows, dim=1) if loss_rows else empty,
        torch.stack(bad_rows, dim=1) if bad_rows else empty.bool(),
        None if x_true is None else torch.stack(psnr_rows, dim=1) if psnr_rows else empty,
    )


def _psnr(params: Params, state: State, hyper: Hyper, x_true: Tensor) -> Tensor:
    """Per problem ``10 log10(1 / mse)`` of the fit's current image clamped to [0, 1],
    ``(B,)``."""
    with torch.no_grad():
        image = _result(params, state, hyper)
        mse = (image.clamp(0, 1) - x_true).pow(2).flatten(1).mean(dim=1)
        return 10 * torch.log10(1 / mse.clamp_min(1e-20))


def finish(trace: Trace, image: Tensor | None = None) -> FitResult:
    """The host side of a fit: the image (the last good parameters' for a problem whose
    final image is not finite), losses and restore steps as lists."""
    with torch.no_grad():
        if image is None:
            image = _result(trace.params, trace.state, trace.hyper)
        finite = torch.isfinite(image).flatten(1).all(dim=1)
        if not bool(finite.all()):
            fallback = _result(trace.good_params, trace.good_state, trace.hyper)
            image = torch.where(finite.view(-1, 1, 1, 1), image, fallback)
        if not bool(torch.isfinite(image).all()):
            raise FloatingPointError(
                "fitting produced no finite image even from the last good parameters; "
                "check the operator and the measurement scale"
            )
    steps = trace.losses.shape[1]
    restored = [[t for t, f in enumerate(row) if f] for row in trace.bad.tolist()]
    for i, ok in enumerate(finite.tolist()):
        if not ok:
            restored[i].append(steps)
    psnr = None if trace.psnr is None else trace.psnr.tolist()
    return FitResult(image.detach(), trace.losses.tolist(), restored, psnr)


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
    x_true: Tensor | None = None,
) -> FitResult:
    """Runs ``steps`` steps from ``params`` on ``y`` ``(B, *out_shape)``.

    A non-finite loss (or, for vanilla DIP, a loss jump over 5 dB) sends that problem
    back to its last good parameters with half the step size; the step indices where
    that happened are in ``restored``.
    """
    b = y.shape[0]
    if hyper.groups != b:
        raise ValueError(
            f"y holds {b} problems but the parameters are for {hyper.groups}; "
            "use prepare(..., batch=B) for B problems"
        )
    bar = tqdm(total=steps, desc=desc, leave=False) if progress else None
    try:
        trace = run_loop(params, y, op, hyper, steps, callback=callback, bar=bar, x_true=x_true)
    finally:
        if bar is not None:
            bar.close()
    return finish(trace)
