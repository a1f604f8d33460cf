"""MAML for DIP initializations (MetaDIP): the ``method="maml"`` training loop.

Each outer step samples ``meta_batch`` patches and tasks, computes the
meta-gradient through ``steps`` inner steps (``metadip.meta.meta_gradient``) and
takes one Adam step on the meta-parameters. Every ``val_every`` outer steps the
current init and a random init (vanilla DIP: Adam, jitter, EMA) are fitted for
``steps`` inner steps to fixed held-out patches; the mean PSNR of both is logged.
Every ``ckpt_every`` steps a checkpoint (meta-parameters, optimizer, RNG state)
is written atomically; ``--resume`` continues from it and Ctrl-C writes one.

Outputs in ``out``: ``init.safetensors`` (loadable by ``reconstruct(init=PATH)``),
``checkpoint.pt``, ``log.jsonl`` (one JSON object per outer step / validation)
and ``convergence.png`` (validation PSNR vs inner step, log-x, random vs meta init).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, replace
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from metadip.init import MetaInit
from metadip.meta import HYPER_NAMES, meta_gradient
from metadip.operators import moved
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
from metadip.train.distributed import join

__all__ = ["train_maml"]


def _initial(cfg: TrainConfig, dtype: torch.dtype) -> MetaInit:
    return MetaInit.random(
        cfg.channels,
        width=cfg.width,
        depth=cfg.depth,
        steps=cfg.steps,
        seed=cfg.seed,
        lr=cfg.inner_lr,
        momentum=cfg.momentum,
        tv_weight=cfg.tv_weight,
        num_fourier=_fourier(cfg),
        fourier_scale=cfg.fourier_scale,
        kind=cfg.network,
        dtype=dtype,
        network=cfg.solver_options,
    )


def _fourier(cfg: TrainConfig) -> int:
    # The deep decoder's input is a small noise tensor with no coordinate features.
    return 0 if cfg.network == "decoder" else cfg.num_fourier


def _warm_start(cfg: TrainConfig, dtype: torch.dtype) -> MetaInit:
    """The init in ``cfg.init_from``, resized to ``cfg.steps`` inner steps; its network must
    be the configured one (a fine-tune, e.g. at a larger patch size or longer horizon)."""
    loaded = MetaInit.load(cfg.init_from)
    want = _initial(cfg, dtype).config
    if loaded.config != want:
        raise ValueError(
            f"init_from {cfg.init_from}: network {loaded.config.to_dict()} differs from the "
            f"configured {want.to_dict()}"
        )
    if loaded.rule != "sgd" or loaded.ema > 0 or loaded.jitter > 0:
        raise ValueError(
            f"init_from {cfg.init_from}: meta-training needs an SGD init without jitter or EMA, "
            f"got rule {loaded.rule!r}, jitter {loaded.jitter}, ema {loaded.ema}"
        )
    return replace(loaded.with_steps(cfg.steps), metadata={}).to(dtype=dtype)


def _random_baseline(cfg: TrainConfig, dtype: torch.dtype) -> MetaInit:
    """Vanilla DIP on the same architecture: random weights, Adam 0.01, jitter, EMA."""
    return MetaInit.random(
        cfg.channels,
        width=cfg.width,
        depth=cfg.depth,
        steps=cfg.steps,
        seed=cfg.seed,
        rule="adam",
        num_fourier=_fourier(cfg),
        kind=cfg.network,
        dtype=dtype,
        network=cfg.solver_options,
    )


def _with_tensors(init: MetaInit, tensors: dict[str, Tensor]) -> MetaInit:
    weights = {k: tensors[f"weights.{k}"] for k in init.weights}
    return replace(init, weights=weights, **{n: tensors[n] for n in HYPER_NAMES})


def clip_meta_gradient(grads: dict[str, Tensor], clip: float) -> tuple[dict[str, Tensor], float]:
    """``grads`` scaled to a global norm of at most ``clip`` (0: unclipped), and their norm
    before scaling (inf or nan where an entry is not finite).

    The norm is summed in float64: float32 squares overflow once entries pass ~1e19, and
    ``torch.nn.utils.clip_grad_norm_`` then scales by clip / inf, a silent zero step (seen
    at width 128 with a 50-step horizon on the GPU)."""
    norm = math.sqrt(sum(float(g.double().square().sum()) for g in grads.values()))
    if not math.isfinite(norm) or not clip or norm <= clip:
        return grads, norm
    scale = clip / norm
    return {n: g * scale for n, g in grads.items()}, norm


def train_maml(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> TrainResult:
    """Runs (or resumes) meta-training as configured; see the module docstring. Under
    ``torchrun`` the meta-batch is shared among the processes (``train.distributed``)."""
    procs = join(cfg.device, cfg.meta_batch)
    session = start_session(cfg, resume, writer=procs.writer)
    run, device, dtype, held_out = session.run, session.device, session.dtype, session.held_out
    if (done := already_done(run)) is not None:
        return done
    sampler, task_sampler = session.patches, session.tasks
    ckpt = run.checkpoint

    init = (_warm_start(cfg, dtype) if cfg.init_from else _initial(cfg, dtype)).to(device)
    names = [n for n in init.tensors() if n != "fourier_basis"]
    tensors = {n: t.detach().clone().to(device) for n, t in init.tensors().items() if n in names}
    if ckpt is not None:
        tensors = {n: ckpt["tensors"][n].to(device=device, dtype=dtype) for n in names}
    init = _with_tensors(init, tensors)
    groups = [
        {"params": [tensors[n] for n in names if n.startswith("weights.")], "lr": cfg.outer_lr},
        {"params": [tensors[n] for n in HYPER_NAMES], "lr": cfg.hyper_lr},
    ]
    opt = torch.optim.Adam(groups)
    gen = torch.Generator().manual_seed(cfg.seed)
    start = run.start
    records = run.records
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["rng"])
        torch.set_rng_state(ckpt["torch_rng"])
    else:
        torch.manual_seed(cfg.seed)

    random_init = _random_baseline(cfg, dtype).to(device)
    val_random = next((r["val_random"] for r in records if "val_random" in r), None)
    val_meta = next((r["val_meta"] for r in reversed(records) if "val_meta" in r), None)

    log = run.log

    def validate(step: int) -> None:
        nonlocal val_meta, val_random
        if not procs.writer:
            return
        if val_random is None:
            val_random = evaluate(random_init, held_out, cfg.steps)
        val_meta = evaluate(init, held_out, cfg.steps)
        log({"step": step, "val_meta": val_meta, "val_random": val_random})

    def save(step: int) -> None:
        if not procs.writer:
            return
        meta = replace(init, metadata=_metadata(cfg, step, val_meta, val_random))
        meta.save(run.init_path)
        run.save(
            {
                "step": step,
                "tensors": {n: t.detach().cpu() for n, t in tensors.items()},
                "optimizer": opt.state_dict(),
                "rng": gen.get_state(),
                "torch_rng": torch.get_rng_state(),
            }
        )

    if start == 0:
        validate(0)
    segment = cfg.segment or None
    bar = tqdm(
        range(start + 1, cfg.outer_steps + 1),
        initial=start,
        total=cfg.outer_steps,
        desc="meta-training",
        disable=not (progress and procs.writer),
        dynamic_ncols=True,
    )
    step = start
    interrupted = False
    try:
        for s in bar:
            t0 = time.perf_counter()
            for group in opt.param_groups[:1]:
                group["lr"] = cfg.outer_lr_at(s)
            patches = sampler.sample(cfg.meta_batch, gen).to(dtype)
            # Every process samples the whole meta-batch (the generators stay in step)
            # and fits its share; the shares' gradients are averaged over all of it.
            batch = procs.share(task_sampler.sample(patches, gen))
            batch = [(x.to(device), moved(op, device), y.to(device)) for x, op, y in batch]
            loss, grads = meta_gradient(
                init, batch, cfg.steps, cfg.mode, segment, cfg.loss, cfg.frozen
            )
            loss, grads = procs.mean(loss, grads, len(batch))
            grads, norm = clip_meta_gradient(grads, cfg.clip)
            if not math.isfinite(norm):
                # A diverging inner loop on one batch should not poison the init.
                log({"step": s, "loss": float(loss), "skipped": "non-finite meta-gradient"})
            else:
                for n in names:
                    tensors[n].grad = grads.get(n)
                opt.step()
                opt.zero_grad(set_to_none=True)
                with torch.no_grad():
                    # Keep the rule well-posed: momentum in [0, 0.999), weights of penalties >= 0.
                    tensors["momentum"].clamp_(0.0, 0.999)
                    tensors["tv_weight"].clamp_(min=0.0)
                    tensors["fourier_scale"].clamp_(min=0.0)
                log(
                    {
                        "step": s,
                        "loss": float(loss),
                        "grad_norm": norm,
                        "seconds": time.perf_counter() - t0,
                    }
                )
            step = s
            if s % cfg.val_every == 0 or s == cfg.outer_steps:
                validate(s)
            if s % cfg.ckpt_every == 0 or s == cfg.outer_steps:
                save(s)
            post = {"loss": f"{float(loss):.4g}"}
            if val_meta is not None:
                post["val"] = f"{val_meta:.2f}/{val_random:.2f} dB (meta/random)"
            bar.set_postfix(post)
    except KeyboardInterrupt:
        interrupted = True
        bar.close()
        print(f"\ninterrupted: saving a checkpoint at outer step {step}", file=sys.stderr)
        save(step)
        return TrainResult(run.init_path, step, val_meta, val_random, interrupted=True)
    bar.close()
    save(step)
    if not procs.writer:
        return TrainResult(run.init_path, step, val_meta, val_random, interrupted)
    points = sorted(set(log_points(cfg.plot_steps)) | {cfg.steps})
    curves = {
        "random init (vanilla DIP: Adam, jitter, EMA)": psnr_curve(random_init, held_out, points),
        f"meta init ({step} outer steps)": psnr_curve(init, held_out, points),
    }
    plot_curves(run.plot_path, curves, title=f"validation PSNR, {cfg.val_patches} held-out patches")
    log({"step": step, "curves": curves})
    return TrainResult(run.init_path, step, val_meta, val_random, interrupted)


def _metadata(cfg: TrainConfig, step: int, val_meta: Any, val_random: Any) -> dict:
    return {
        "source": "metadip train",
        "outer_step": step,
        "train_config": asdict(cfg),
        "val_psnr_meta": val_meta,
        "val_psnr_random": val_random,
    }
