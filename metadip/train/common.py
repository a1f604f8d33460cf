"""What every training method shares: validation, checkpoints, logs and resuming."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from metadip.data import PatchSampler, TaskSampler, load_images
from metadip.guide import guide_input
from metadip.init import MetaInit
from metadip.inner import prepare
from metadip.loop import fit
from metadip.losses import check_loss
from metadip.metrics import PsnrTrack, psnr
from metadip.operators import moved
from metadip.plots import plot_curves
from metadip.train.config import CKPT_FORMAT, RESUMABLE, TrainConfig

__all__ = [
    "Run",
    "Session",
    "TrainResult",
    "atomic_save",
    "evaluate",
    "log_points",
    "open_run",
    "plot_validation",
    "psnr_curve",
    "start_session",
    "val_tasks",
]


# -- validation -----------------------------------------------------------------------------


def _prepared(init: MetaInit, x: torch.Tensor, op: Any, y: torch.Tensor, steps: int) -> tuple:
    check_loss(init.loss, op)
    guide = guide_input(init.config, op, y[None]) if init.config.guided else None
    return prepare(init, tuple(x.shape), steps=steps, guide=guide, problem=(op, y[None]))


def evaluate(init: MetaInit, tasks: list, steps: int) -> float:
    """Mean PSNR over ``tasks`` ``(x, op, y)`` after ``steps`` inner steps of the same fit
    ``reconstruct`` runs (the EMA image for inits that keep one)."""
    total = 0.0
    for x, op, y in tasks:
        params, hyper = _prepared(init, x, op, y, steps)
        res = fit(params, y[None], op, hyper, steps)
        total += psnr(res.image[0].clamp(0, 1), x)
    return total / len(tasks)


def log_points(n: int) -> list[int]:
    """1, 2, 3, 5, 7, 10, 15, 20, 30, 50, ... up to and including n."""
    pts = sorted({min(n, round(m * 10**e)) for e in range(6) for m in (1, 1.5, 2, 3, 5, 7)})
    return [p for p in pts if 1 <= p <= n]


def psnr_curve(init: MetaInit, tasks: list, points: list[int]) -> list[tuple[int, float]]:
    """Mean PSNR after n inner steps for each n in ``points``. Without EMA one fit of
    ``max(points)`` steps is tracked (an extra forward at the points); with EMA the result
    depends on n, so each point is its own fit."""
    if init.ema > 0:
        return [(n, evaluate(init, tasks, n)) for n in points]
    horizon = max(points)
    sums = dict.fromkeys(points, 0.0)
    for x, op, y in tasks:
        params, hyper = _prepared(init, x, op, y, horizon)
        track = PsnrTrack(x, points)
        fit(params, y[None], op, hyper, horizon, callback=track)
        for n, value in track.curve:
            sums[n] += value
    return [(n, sums[n] / len(tasks)) for n in points]


def val_tasks(cfg: TrainConfig, val_images: dict, dtype: torch.dtype, device: Any) -> list:
    """Fixed held-out tasks: patches of the validation files (no augmentation), seeded."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    sampler = PatchSampler(val_images, cfg.validation_patch, augment=False)
    patches = sampler.sample(cfg.val_patches, g).to(dtype)
    tasks = TaskSampler(cfg.tasks, tuple(cfg.sigma), tuple(cfg.ratio)).sample(patches, g)
    return [(x.to(device), moved(op, device), y.to(device)) for x, op, y in tasks]


# -- checkpoints and logs -------------------------------------------------------------------


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file, fsync, rename: a crash never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_log(path: Path, upto: int) -> list[dict]:
    """The log's records up to outer step ``upto`` (later ones belong to lost work)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            if rec.get("step", 0) <= upto:
                out.append(rec)
    return out


@dataclass
class TrainResult:
    init_path: Path
    step: int
    val_meta: float | None
    val_random: float | None
    interrupted: bool = False


def already_done(run: Run) -> TrainResult | None:
    """For a run resumed at ``outer_steps`` already: says so on stderr and returns its
    result, so that a finished run is not validated, plotted or logged again; else None."""
    if run.start < run.cfg.outer_steps:
        return None
    if run.writer:
        print(
            f"{run.out}: already trained to outer step {run.start} of {run.cfg.outer_steps}; "
            "raise --outer-steps to continue",
            file=sys.stderr,
        )

    def last(key: str) -> float | None:
        return next((r[key] for r in reversed(run.records) if key in r), None)

    return TrainResult(run.init_path, run.start, last("val_meta"), last("val_random"))


def plot_validation(records: list[dict], path: Path) -> Path | None:
    """``validation.png``: every ``val_*`` PSNR of the log against the outer step (log-x;
    step 0 is left out), or None before the first validation after step 0."""
    keys = sorted({k for r in records for k in r if k.startswith("val_")})
    curves = {
        k: [(int(r["step"]), float(r[k])) for r in records if k in r and r["step"] > 0]
        for k in keys
    }
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    return plot_curves(path, curves, "validation PSNR (dB)", x_label="outer step (log scale)")


@dataclass
class Run:
    """An output folder being trained into: its paths, the checkpoint being resumed
    (None for a fresh run) and the log records kept from before the checkpoint."""

    cfg: TrainConfig
    out: Path
    checkpoint: dict | None
    records: list[dict] = field(default_factory=list)
    # Whether this process writes the folder (False for the other processes of a
    # data-parallel run, which keep records in memory only).
    writer: bool = True

    @property
    def ckpt_path(self) -> Path:
        return self.out / "checkpoint.pt"

    @property
    def log_path(self) -> Path:
        return self.out / "log.jsonl"

    @property
    def init_path(self) -> Path:
        return self.out / "init.safetensors"

    @property
    def plot_path(self) -> Path:
        return self.out / "convergence.png"

    @property
    def validation_plot_path(self) -> Path:
        return self.out / "validation.png"

    @property
    def start(self) -> int:
        return int(self.checkpoint["step"]) if self.checkpoint else 0

    def log(self, rec: dict) -> None:
        """Appends ``rec`` to the log; a validation record also redraws ``validation.png``
        (validation PSNR vs outer step), so the plot on disk is never behind the log."""
        self.records.append(rec)
        if not self.writer:
            return
        with open(self.log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if any(k.startswith("val_") for k in rec):
            plot_validation(self.records, self.validation_plot_path)

    def save(self, state: dict) -> None:
        """Writes the checkpoint: ``state`` (step, tensors, optimizer, RNG) plus the config."""
        if self.writer:
            atomic_save(
                {"format": CKPT_FORMAT, "config": asdict(self.cfg), **state}, self.ckpt_path
            )


@dataclass
class Session:
    """What a training loop starts from: the run folder, device and dtype, the samplers of
    training patches and tasks, and the fixed held-out tasks."""

    run: Run
    device: torch.device
    dtype: torch.dtype
    patches: PatchSampler
    tasks: TaskSampler
    held_out: list


def split_images(cfg: TrainConfig) -> tuple[dict, dict]:
    """The run's train and validation images (``name -> (C, H, W)`` uint8), split by file
    with ``cfg.split_seed``: the training ``seed`` never moves a photo between them."""
    return load_images(cfg.data, cfg.channels, cfg.val_fraction, cfg.split_seed)


def start_session(cfg: TrainConfig, resume: bool, writer: bool = True) -> Session:
    """Opens (or resumes) ``cfg.out``, sets the thread count and loads the data split;
    ``writer=False`` (a data-parallel process other than the first) reads and writes
    nothing in ``cfg.out`` but the checkpoint it resumes from."""
    run = open_run(cfg, resume, writer)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    dtype = getattr(torch, cfg.dtype)
    train_images, val_images = split_images(cfg)
    return Session(
        run,
        device,
        dtype,
        PatchSampler(train_images, cfg.patch),
        TaskSampler(cfg.tasks, tuple(cfg.sigma), tuple(cfg.ratio)),
        val_tasks(cfg, val_images or train_images, dtype, device),
    )


def open_run(cfg: TrainConfig, resume: bool, writer: bool = True) -> Run:
    """Creates ``cfg.out`` or, with ``resume``, loads its checkpoint after checking that
    only resumable options changed; the log is cut back to the checkpoint's step. A
    non-``writer`` only loads the checkpoint."""
    out = Path(cfg.out)
    run = Run(cfg, out, None, writer=writer)
    if not writer:
        if resume:
            run.checkpoint = torch.load(run.ckpt_path, map_location="cpu", weights_only=False)
        return run
    out.mkdir(parents=True, exist_ok=True)
    if resume:
        if not run.ckpt_path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {run.ckpt_path}")
        ckpt = torch.load(run.ckpt_path, map_location="cpu", weights_only=False)
        if ckpt.get("format") != CKPT_FORMAT:
            raise ValueError(f"{run.ckpt_path} is not a metadip training checkpoint")
        saved = TrainConfig.from_dict(ckpt["config"])
        changed = {
            k for k in TrainConfig.option_names() if getattr(saved, k) != getattr(cfg, k)
        } - RESUMABLE
        if changed:
            detail = ", ".join(
                f"{k}: checkpoint {getattr(saved, k)!r}, given {getattr(cfg, k)!r}"
                for k in sorted(changed)
            )
            raise ValueError(f"--resume: options differ from the checkpoint's ({detail})")
        run.checkpoint = ckpt
        run.records = _read_log(run.log_path, run.start)
    elif run.ckpt_path.is_file():
        raise ValueError(
            f"{run.ckpt_path} exists: pass --resume to continue it, or choose another --out"
        )
    # Rewrite the log without records past the checkpoint (work that was lost).
    with open(run.log_path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in run.records)
    return run
