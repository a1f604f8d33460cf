"""``metadip train`` on the command line: flags, TOML configs, signals."""

from __future__ import annotations

import argparse
import signal
from dataclasses import fields
from typing import Any

from metadip.meta import MODES
from metadip.train.config import METHODS, TrainConfig
from metadip.train.distributed import launched_rank
from metadip.train.run import train

__all__ = ["add_parser", "cmd_train", "config_from_args"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Registers ``metadip train`` on the CLI's subparsers."""
    p = sub.add_parser(
        "train",
        help="meta-train (maml) or pretrain (educated) an initialization",
        description="Meta-train a DIP initialization (--method maml) or pretrain an "
        "Educated-DIP one (--method educated); resumable, checkpointed.",
    )
    p.add_argument("--config", default=None, help="TOML file with any of the options below")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    helps = {
        "method": " | ".join(METHODS) + ": meta-learn a DIP init, or pretrain an Educated-DIP one",
        "rule": "inner (fine-tune) rule: sgd or adam (default: maml sgd, educated adam)",
        "inner_lr": "initial inner learning rate (0: maml 1.0, educated 1e-4)",
        "inner_loss": "mse, or sure (educated denoising: Stein's unbiased risk estimate)",
        "outer_lr_min": "cosine-anneal the outer learning rate down to this (0: constant)",
        "clip": "clip the norm of each outer (meta-)gradient to this (0: off)",
        "val_patch": "validation patch size (0: the training patch)",
        "mono_fraction": "educated: share of training pairs made gray (serves 1-channel images)",
        "network": "skip (DIP U-Net), siren (coordinate network, for MetaSIREN) or decoder "
        "(Deep Decoder; no Fourier features)",
        "steps": "inner steps T",
        "segment": "steps per checkpointed segment (0: ceil(sqrt(T)); auto plans its own)",
        "mode": "meta-gradient: " + " | ".join(MODES),
        "meta_batch": "tasks per outer step",
        "outer_lr": "Adam learning rate of the weights (educated: of the network)",
        "hyper_lr": "Adam learning rate of log_lr, momentum, tv_weight, fourier_scale",
        "tasks": "e.g. denoise or denoise=1,cs=0.5,pr=0.5",
        "sigma": "noise std on the 0-255 scale, or a range LO,HI",
        "ratio": "m/n for cs and pr, or a range LO,HI",
        "data": "image folder, 'natural' (../shared/data/natural-train), 'skimage' or 'auto'",
        "patch": "patch size (pixels)",
        "frozen": "comma-separated meta-parameters not to train (e.g. tv_weight,weights)",
        "val_every": "validate every N outer steps",
        "ckpt_every": "checkpoint every N outer steps",
        "plot_steps": "inner steps shown in the convergence plot",
        "out": "output folder",
        "threads": "torch CPU threads (0: default)",
        "init_from": "start from this init file (same network; educated: up to the guide) "
        "instead of a random one",
        "guide": "educated: the network's guide image, adjoint (A^T y) or tv (TV estimate)",
        "guide_iters": "educated, guide tv: FISTA steps of the TV estimate",
        "guide_weights": "educated, guide tv: TV weight per task (x sigma), e.g. cs=1,pr=0.3 "
        "(1 for tasks not named)",
    }
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        dest = "train_tasks" if f.name == "tasks" else f.name
        default = getattr(defaults, f.name)
        kind = type(default) if isinstance(default, (int, float)) else str
        text = helps.get(f.name, "")
        p.add_argument(
            flag, dest=dest, type=kind, default=None, help=f"{text} (default: {default})".strip()
        )
    p.set_defaults(func=cmd_train)
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults < TOML config < command-line flags."""
    given = {}
    for f in fields(TrainConfig):
        v = getattr(args, "train_tasks" if f.name == "tasks" else f.name, None)
        if v is not None:
            given[f.name] = v
    if args.config:
        return TrainConfig.from_toml(args.config, **given)
    return TrainConfig(**given)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def cmd_train(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    # A run sent to the background ignores Ctrl-C, so `kill` (SIGTERM) saves a checkpoint too.
    signal.signal(signal.SIGTERM, _interrupt)
    res = train(cfg, resume=args.resume, progress=not args.no_progress)
    if launched_rank() != 0:  # under torchrun, the first process reports
        return 130 if res.interrupted else 0
    if res.val_meta is not None:
        random = "" if res.val_random is None else f", random init {res.val_random:.2f} dB"
        print(
            f"step {res.step}: validation PSNR after {cfg.steps} inner steps: "
            f"trained init {res.val_meta:.2f} dB{random}"
        )
    print(f"wrote {res.init_path}")
    return 130 if res.interrupted else 0
