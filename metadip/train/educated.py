"""Educated DIP (Barbano et al.): the ``method="educated"`` training loop.

Stage 1, here: a skip network whose input is the guide image ``Aᵀy`` (the noisy
image itself for denoising) and whose output is ``guide + head`` (residual, no
normalization layers, so absolute intensities and noise levels pass through) is
trained supervised on simulated pairs: clean patches x of the training photos,
``y = op(x) + noise`` from the configured tasks, loss ``mean((f(Aᵀy) − x)²)`` (or
the mean absolute error), Adam with an optional cosine decay and gradient-norm
clipping (``clip``: without normalization layers, a rare bad batch at the full rate
can blow the network up for good).

Stage 2 happens at reconstruction time: ``reconstruct(y, op, init=PATH)`` sees
``input="image"`` in the file, feeds ``Aᵀy`` (with the observation mask as one more
channel when the tasks include inpainting) and fine-tunes on the one
measurement with the DIP loss for ``steps`` steps of the stored rule (Adam at
``inner_lr`` by default).

Every ``val_every`` steps the held-out tasks are scored twice: the pretrained
network alone (``val_pretrained``) and after the ``steps`` fine-tune steps
(``val_meta``, the number ``reconstruct`` would give). Outputs are those of
``method="maml"`` (``init.safetensors``, ``checkpoint.pt``, ``log.jsonl``,
``convergence.png``) plus ``best.safetensors``, the init of the best ``val_meta``.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, replace

import torch
from tqdm.auto import tqdm

from metadip.data import TaskSampler
from metadip.guide import guide_input
from metadip.init import MetaInit
from metadip.metrics import psnr
from metadip.netconfig import NetConfig
from metadip.networks import build_network
from metadip.plots import plot_curves
from metadip.train.common import (
    TrainResult,
    already_done,
    evaluate,
    log_points,
    psnr_curve,
    start_session,
)
from metadip.train.config import TrainConfig

__all__ = ["EDUCATED_NETWORK", "educated_init", "pretrain_step", "train_educated"]

# The network options of an Educated-DIP init (besides width and depth).
EDUCATED_NETWORK = {
    "input": "image",
    "residual": True,
    "norm": "none",
    "noise_channels": 0,
    "noise_level": True,
}


def educated_init(cfg: TrainConfig, dtype: torch.dtype) -> MetaInit:
    """An untrained Educated-DIP init for ``cfg``: residual image-input network, and the
    fine-tune rule (``cfg.rule`` at ``cfg.inner_lr`` for ``cfg.steps`` steps)."""
    network = {**EDUCATED_NETWORK, "coverage": "inpaint" in cfg.tasks}  # masks need it
    if cfg.guide != "adjoint":
        network.update(guide=cfg.guide, guide_iters=cfg.guide_iters)
    init = MetaInit.random(
        cfg.channels,
        width=cfg.width,
        depth=cfg.depth,
        steps=cfg.steps,
        seed=cfg.seed,
        rule=cfg.rule,
        lr=cfg.inner_lr,
        momentum=cfg.momentum,
        tv_weight=cfg.tv_weight,
        num_fourier=0,
        dtype=dtype,
        network=network,
    )
    init = replace(init, jitter=0.0, ema=0.0, loss=cfg.inner_loss)
    return _warm_start(cfg, init) if cfg.init_from else init


def _warm_start(cfg: TrainConfig, init: MetaInit) -> MetaInit:
    """``init`` with the weights of ``cfg.init_from``, whose network must be the configured
    one up to its guide (e.g. the shipped denoiser, retrained on TV-estimate inputs)."""
    loaded = MetaInit.load(cfg.init_from)
    guide = {k: getattr(init.config, k) for k in ("guide", "guide_iters", "guide_weight")}
    if replace(loaded.config, **guide) != init.config:
        raise ValueError(
            f"init_from {cfg.init_from}: network {loaded.config.to_dict()} differs from the "
            f"configured {init.config.to_dict()} (beyond the guide)"
        )
    return replace(init, weights={k: v.to(init.dtype) for k, v in loaded.weights.items()})


def _pairs(
    config: NetConfig,
    patches: torch.Tensor,
    tasks: TaskSampler,
    mono_fraction: float,
    gen: torch.Generator,
    guide_weights: dict[str, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Network inputs (the guide: ``Aᵀy``, or the TV estimate at the task's weight in
    ``guide_weights``) and targets x ``(B, C, H, W)`` for clean ``patches``. A
    ``mono_fraction`` of them are made gray (channel mean), measured as 1-channel images
    and repeated to C channels, as ``reconstruct`` feeds gray images to a colour init.
    Random measurement matrices are drawn once per call (per task and shape)."""
    c = patches.shape[1]
    guides, targets = [], []
    shared: dict = {}
    for x in patches:
        if mono_fraction > 0 and float(torch.rand((), generator=gen)) < mono_fraction:
            x = x.mean(dim=0, keepdim=True)
        _, op, y = tasks.make(x, gen, shared)
        weight = (guide_weights or {}).get(op.task, config.guide_weight)
        guides.append(guide_input(replace(config, guide_weight=weight), op, y[None]))
        targets.append(x.expand(c, -1, -1))
    return torch.cat(guides), torch.stack(targets)


def pretrain_step(
    net: torch.nn.Module,
    opt: torch.optim.Optimizer,
    guide: torch.Tensor,
    x: torch.Tensor,
    loss: str = "l2",
    clip: float = 0.0,
) -> tuple[float, float]:
    """One supervised step on a batch: ``mean((f(guide) − x)²)`` (``loss="l2"``, else the
    mean absolute error), backward, gradient-norm clipping at ``clip`` (0: none), then
    ``opt.step()``. ``guide`` and ``x``: ``(B, Cin, H, W)`` and ``(B, C, H, W)``. Returns
    (loss, gradient norm before clipping); a non-finite one skips the update, since a
    non-finite batch must not poison the network."""
    diff = net(guide) - x
    value = diff.pow(2).mean() if loss == "l2" else diff.abs().mean()
    opt.zero_grad(set_to_none=True)
    value.backward()
    norm = float(torch.nn.utils.clip_grad_norm_(net.parameters(), clip or math.inf))
    out = float(value.detach())
    if math.isfinite(out) and math.isfinite(norm):
        opt.step()
    return out, norm


def _pretrained_psnr(net: torch.nn.Module, config: NetConfig, tasks: list) -> float:
    """Mean PSNR of the pretrained network alone (no fine-tuning) on ``tasks``."""
    with torch.no_grad():
        total = 0.0
        for x, op, y in tasks:
            total += psnr(net(guide_input(config, op, y[None]))[0].clamp(0, 1), x)
    return total / len(tasks)


def train_educated(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> TrainResult:
    """Runs (or resumes) Educated-DIP pretraining as configured; see the module docstring."""
    session = start_session(cfg, resume)
    run, device, dtype, held_out = session.run, session.device, session.dtype, session.held_out
    if (done := already_done(run)) is not None:
        return done
    sampler, task_sampler = session.patches, session.tasks

    init = educated_init(cfg, dtype).to(device)
    net = build_network(init.config).to(device=device, dtype=dtype)
    net.load_state_dict(init.weights)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.outer_lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    ckpt = run.checkpoint
    if ckpt is not None:
        net.load_state_dict(ckpt["tensors"])
        opt.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["rng"])
        torch.set_rng_state(ckpt["torch_rng"])
    else:
        torch.manual_seed(cfg.seed)

    def current() -> MetaInit:
        weights = {k: v.detach().clone() for k, v in net.named_parameters()}
        return replace(init, weights=weights)

    last = next((r for r in reversed(run.records) if "val_meta" in r), {})
    val_meta, val_pre = last.get("val_meta"), last.get("val_pretrained")

    best = max((r["val_meta"] for r in run.records if "val_meta" in r), default=-math.inf)

    def validate(step: int) -> None:
        nonlocal val_meta, val_pre, best
        val_pre = _pretrained_psnr(net, init.config, held_out)
        val_meta = evaluate(current(), held_out, cfg.steps)
        run.log({"step": step, "val_pretrained": val_pre, "val_meta": val_meta})
        if val_meta > best:
            # The best validated network survives a later collapse of the run.
            best = val_meta
            meta = {"source": "metadip train --method educated", "outer_step": step}
            replace(current(), metadata={**meta, "val_psnr_meta": val_meta}).save(
                run.out / "best.safetensors"
            )

    def save(step: int) -> None:
        meta = {
            "source": "metadip train --method educated",
            "outer_step": step,
            "train_config": asdict(cfg),
            "val_psnr_pretrained": val_pre,
            "val_psnr_meta": val_meta,
        }
        replace(current(), metadata=meta).save(run.init_path)
        run.save(
            {
                "step": step,
                "tensors": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                "optimizer": opt.state_dict(),
                "rng": gen.get_state(),
                "torch_rng": torch.get_rng_state(),
            }
        )

    if run.start == 0:
        validate(0)
    bar = tqdm(
        range(run.start + 1, cfg.outer_steps + 1),
        initial=run.start,
        total=cfg.outer_steps,
        desc="pretraining",
        disable=not progress,
        dynamic_ncols=True,
    )
    step = run.start
    window: list[float] = []
    norms: list[float] = []
    skipped = 0
    t0 = time.perf_counter()
    try:
        for s in bar:
            for group in opt.param_groups:
                group["lr"] = cfg.outer_lr_at(s)
            patches = sampler.sample(cfg.meta_batch, gen).to(dtype)
            guide, x = _pairs(
                init.config, patches, task_sampler, cfg.mono_fraction, gen, cfg.guide_weights
            )
            value, norm = pretrain_step(
                net, opt, guide.to(device), x.to(device), cfg.loss, cfg.clip
            )
            if not (math.isfinite(value) and math.isfinite(norm)):
                skipped += 1
            else:
                window.append(value)
                norms.append(norm)
            step = s
            # One log line per 100 steps: the mean loss over them, not every step's noise.
            if (s % 100 == 0 or s == cfg.outer_steps) and window:
                run.log(
                    {
                        "step": s,
                        "loss": sum(window) / len(window),
                        "grad_norm": sum(norms) / len(norms),
                        "grad_norm_max": max(norms),
                        "skipped": skipped,
                        "lr": cfg.outer_lr_at(s),
                        "seconds": time.perf_counter() - t0,
                    }
                )
                window, norms, skipped, t0 = [], [], 0, time.perf_counter()
            if s % cfg.val_every == 0 or s == cfg.outer_steps:
                validate(s)
            if s % cfg.ckpt_every == 0 or s == cfg.outer_steps:
                save(s)
            if val_meta is not None:
                bar.set_postfix(val=f"{val_pre:.2f}/{val_meta:.2f} dB (pretrained/+{cfg.steps})")
    except KeyboardInterrupt:
        bar.close()
        print(f"\ninterrupted: saving a checkpoint at step {step}", file=sys.stderr)
        save(step)
        return TrainResult(run.init_path, step, val_meta, None, interrupted=True)
    bar.close()
    save(step)
    final = current()
    points = sorted(set(log_points(cfg.plot_steps)) | {cfg.steps})
    curves = {f"educated init ({step} steps), fine-tuned": psnr_curve(final, held_out, points)}
    plot_curves(run.plot_path, curves, title=f"validation PSNR, {cfg.val_patches} held-out patches")
    run.log({"step": step, "curves": curves})
    return TrainResult(run.init_path, step, val_meta, None)
