"""``metadip train``: meta-train an initialization with Adam in the outer loop.

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

import argparse
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from metadip.data import TRAIN_TASKS, PatchSampler, TaskSampler, load_images
from metadip.init import MetaInit
from metadip.inner import fit, prepare
from metadip.meta import HYPER_NAMES, LOSSES, MODES, meta_gradient
from metadip.metrics import psnr

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = [
    "TrainConfig",
    "add_parser",
    "evaluate",
    "log_points",
    "plot_curves",
    "psnr_curve",
    "train",
]

CKPT_FORMAT = "metadip-train/1"
# Options that may change when resuming; everything else must match the checkpoint.
POSITIVE = (
    "channels",
    "width",
    "depth",
    "steps",
    "outer_steps",
    "meta_batch",
    "patch",
    "val_patches",
    "val_every",
    "ckpt_every",
    "plot_steps",
)
RESUMABLE = {"outer_steps", "val_every", "ckpt_every", "plot_steps", "device", "threads", "out"}


@dataclass
class TrainConfig:
    """Every option of ``metadip train`` (TOML keys and ``--flags`` have these names)."""

    # network
    network: str = "skip"  # "skip" (DIP U-Net) or "siren" (MetaSIREN baseline)
    channels: int = 3
    width: int = 32
    depth: int = 4
    num_fourier: int = 16
    # inner loop (initial values of the learned hyper-parameters)
    steps: int = 10
    inner_lr: float = 1.0
    momentum: float = 0.9
    tv_weight: float = 0.0
    fourier_scale: float = 2.0
    # meta-gradient
    mode: str = "checkpointed"
    segment: int = 0  # 0: ⌈√steps⌉
    loss: str = "l2"
    frozen: list[str] = field(default_factory=list)
    # warm start: an init file (same network) whose weights and hyper-parameters start training
    init_from: str = ""
    # outer loop
    outer_steps: int = 300
    meta_batch: int = 4
    outer_lr: float = 1e-3
    hyper_lr: float = 1e-2
    # data and tasks
    data: str = "auto"
    patch: int = 64
    val_fraction: float = 0.1
    tasks: dict[str, float] = field(default_factory=lambda: {"denoise": 1.0})
    sigma: list[float] = field(default_factory=lambda: [25.0, 25.0])
    ratio: list[float] = field(default_factory=lambda: [0.25, 0.25])
    # validation, output, machine
    val_patches: int = 8
    val_every: int = 25
    ckpt_every: int = 10
    plot_steps: int = 100
    out: str = "metadip-train"
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0
    threads: int = 0  # 0: torch's default

    def __post_init__(self) -> None:
        self.tasks = _parse_tasks(self.tasks)
        self.sigma = _parse_range(self.sigma, "sigma")
        self.ratio = _parse_range(self.ratio, "ratio")
        if isinstance(self.frozen, str):
            self.frozen = [s for s in self.frozen.split(",") if s]
        for name in POSITIVE:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if self.segment < 0:
            raise ValueError(f"segment must be >= 0 (0 = ⌈√steps⌉), got {self.segment}")
        if self.network not in ("skip", "siren"):
            raise ValueError(f"network must be 'skip' or 'siren', got {self.network!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        for name in ("inner_lr", "outer_lr", "hyper_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")

    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """From a flat dict or one with sections (``[network]``, ``[outer]`` ...) one level
        deep; ``tasks`` may be a table ``{name = probability}``."""
        flat: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, dict) and k != "tasks":
                flat.update(v)
            else:
                flat[k] = v
        unknown = set(flat) - set(cls.option_names())
        if unknown:
            raise ValueError(
                f"unknown training option(s) {sorted(unknown)}; "
                f"valid: {', '.join(cls.option_names())}"
            )
        return cls(**flat)

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no config file at {path}")
        with open(path, "rb") as f:
            try:
                d = tomllib.load(f)
            except tomllib.TOMLDecodeError as e:
                raise ValueError(f"{path}: not valid TOML: {e}") from e
        cfg = cls.from_dict(d)
        return replace(cfg, **overrides) if overrides else cfg


def _parse_tasks(tasks: Any) -> dict[str, float]:
    """``"denoise"``, ``"denoise=1,cs=0.5"``, a list of names or a dict -> probabilities."""
    if isinstance(tasks, str):
        out: dict[str, float] = {}
        for part in filter(None, (s.strip() for s in tasks.split(","))):
            name, _, p = part.partition("=")
            try:
                out[name.strip()] = float(p) if p else 1.0
            except ValueError:
                raise ValueError(f"tasks: {part!r} is not NAME or NAME=PROBABILITY") from None
        tasks = out
    elif isinstance(tasks, (list, tuple)):
        tasks = {str(t): 1.0 for t in tasks}
    if not isinstance(tasks, dict) or not tasks:
        raise ValueError(f"tasks must name at least one of {TRAIN_TASKS}, got {tasks!r}")
    unknown = set(tasks) - set(TRAIN_TASKS)
    if unknown:
        raise ValueError(f"unknown training task(s) {sorted(unknown)}; choose from {TRAIN_TASKS}")
    return {k: float(v) for k, v in tasks.items()}


def _parse_range(v: Any, name: str) -> list[float]:
    """``25``, ``"15,35"`` or ``[15, 35]`` -> ``[lo, hi]``."""
    if isinstance(v, str):
        v = [s for s in v.split(",") if s.strip()]
    if isinstance(v, (int, float)):
        v = [v, v]
    try:
        vals = [float(s) for s in v]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or LO,HI, got {v!r}") from None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or not vals[0] <= vals[1]:
        raise ValueError(f"{name} must be a number or a range LO,HI with LO <= HI, got {v!r}")
    return vals


# -- validation -----------------------------------------------------------------------------


def evaluate(init: MetaInit, tasks: list, steps: int) -> float:
    """Mean PSNR over ``tasks`` ``(x, op, y)`` after ``steps`` inner steps of the same fit
    ``reconstruct`` runs (the EMA image for inits that keep one)."""
    total = 0.0
    for x, op, y in tasks:
        params, hyper = prepare(init, tuple(x.shape), steps=steps)
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
    want, horizon = set(points), max(points)
    sums = dict.fromkeys(points, 0.0)
    for x, op, y in tasks:
        params, hyper = prepare(init, tuple(x.shape), steps=horizon)

        def track(info, x=x) -> None:
            if info.step + 1 in want:
                sums[info.step + 1] += psnr(info.image()[0].clamp(0, 1), x)

        fit(params, y[None], op, hyper, horizon, callback=track)
    return [(n, sums[n] / len(tasks)) for n in points]


# -- plotting (Pillow, no matplotlib) --------------------------------------------------------


def plot_curves(
    path: str | Path,
    curves: dict[str, list[tuple[int, float]]],
    title: str = "",
    size: tuple[int, int] = (640, 420),
) -> Path:
    """Line plot of ``label -> [(step, value), ...]`` with a log-x axis, as PNG."""
    from PIL import Image, ImageDraw

    w, h = size
    left, right, top, bottom = 60, 20, 30, 50
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    if not curves or not all(curves.values()):
        raise ValueError("plot_curves needs at least one non-empty curve")
    n_max = max(n for v in curves.values() for n, _ in v)
    vals = [y for v in curves.values() for _, y in v if math.isfinite(y)]
    lo, hi = math.floor(min(vals)), math.ceil(max(vals))
    hi = hi if hi > lo else lo + 1
    xmax = math.log10(max(n_max, 2))

    def px(step: int, value: float) -> tuple[float, float]:
        fx = math.log10(step) / xmax
        fy = (value - lo) / (hi - lo)
        return left + fx * (w - left - right), h - bottom - fy * (h - top - bottom)

    d.rectangle([left, top, w - right, h - bottom], outline="black")
    for dec in range(0, int(xmax) + 1):
        for m in (1, 2, 5):
            s = m * 10**dec
            if s > n_max:
                break
            x, _ = px(s, lo)
            d.line([x, top, x, h - bottom], fill=(225, 225, 225))
            d.text((x - 6, h - bottom + 4), str(s), fill="black")
    step_y = max(1, math.ceil((hi - lo) / 8))
    for v in range(lo, hi + 1, step_y):
        _, y = px(1, v)
        d.line([left, y, w - right, y], fill=(225, 225, 225))
        d.text((left - 28, y - 6), str(v), fill="black")
    d.text((w // 2 - 60, h - 20), "inner step (log scale)", fill="black")
    d.text((4, top - 22), "PSNR (dB)", fill="black")
    d.text((left + 100, 8), title, fill="black")
    colours = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]
    for i, (label, v) in enumerate(curves.items()):
        pts = [px(n, y) for n, y in v if math.isfinite(y)]
        colour = colours[i % len(colours)]
        if len(pts) > 1:
            d.line(pts, fill=colour, width=2)
        ly = top + 10 + 16 * i
        d.line([left + 10, ly + 6, left + 30, ly + 6], fill=colour, width=2)
        n_last, y_last = v[-1]
        d.text((left + 36, ly), f"{label} ({y_last:.2f} dB at {n_last})", fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


# -- training ----------------------------------------------------------------------------------


def _atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file, fsync, rename: a crash never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
        num_fourier=cfg.num_fourier,
        fourier_scale=cfg.fourier_scale,
        kind=cfg.network,
        dtype=dtype,
    )


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
        num_fourier=cfg.num_fourier,
        kind=cfg.network,
        dtype=dtype,
    )


def _with_tensors(init: MetaInit, tensors: dict[str, Tensor]) -> MetaInit:
    weights = {k: tensors[f"weights.{k}"] for k in init.weights}
    return replace(init, weights=weights, **{n: tensors[n] for n in HYPER_NAMES})


def _val_tasks(cfg: TrainConfig, val_images: dict, dtype: torch.dtype, device: Any) -> list:
    """Fixed held-out tasks: patches of the validation files (no augmentation), seeded."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    sampler = PatchSampler(val_images, cfg.patch, augment=False)
    patches = sampler.sample(cfg.val_patches, g).to(dtype)
    tasks = TaskSampler(cfg.tasks, tuple(cfg.sigma), tuple(cfg.ratio)).sample(patches, g)
    return [(x.to(device), op.to(device=device), y.to(device)) for x, op, y in tasks]


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


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> TrainResult:
    """Runs (or resumes) meta-training as configured; see the module docstring."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path = out / "checkpoint.pt", out / "log.jsonl"
    init_path, plot_path = out / "init.safetensors", out / "convergence.png"
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    dtype = getattr(torch, cfg.dtype)

    ckpt = None
    if resume:
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ckpt.get("format") != CKPT_FORMAT:
            raise ValueError(f"{ckpt_path} is not a metadip training checkpoint")
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
    elif ckpt_path.is_file():
        raise ValueError(
            f"{ckpt_path} exists: pass --resume to continue it, or choose another --out"
        )

    train_images, val_images = load_images(cfg.data, cfg.channels, cfg.val_fraction, cfg.seed)
    sampler = PatchSampler(train_images, cfg.patch)
    task_sampler = TaskSampler(cfg.tasks, tuple(cfg.sigma), tuple(cfg.ratio))
    val_tasks = _val_tasks(cfg, val_images or train_images, dtype, device)

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
    start = 0
    records: list[dict] = []
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["rng"])
        torch.set_rng_state(ckpt["torch_rng"])
        start = int(ckpt["step"])
        records = _read_log(log_path, start)
    else:
        torch.manual_seed(cfg.seed)
    # Rewrite the log without records past the checkpoint (work that was lost).
    with open(log_path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)

    random_init = _random_baseline(cfg, dtype).to(device)
    val_random = next((r["val_random"] for r in records if "val_random" in r), None)
    val_meta = next((r["val_meta"] for r in reversed(records) if "val_meta" in r), None)

    def log(rec: dict) -> None:
        records.append(rec)
        with open(log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def validate(step: int) -> None:
        nonlocal val_meta, val_random
        if val_random is None:
            val_random = evaluate(random_init, val_tasks, cfg.steps)
        val_meta = evaluate(init, val_tasks, cfg.steps)
        log({"step": step, "val_meta": val_meta, "val_random": val_random})

    def save(step: int) -> None:
        meta = replace(init, metadata=_metadata(cfg, step, val_meta, val_random))
        meta.save(init_path)
        state = {
            "format": CKPT_FORMAT,
            "step": step,
            "config": asdict(cfg),
            "tensors": {n: t.detach().cpu() for n, t in tensors.items()},
            "optimizer": opt.state_dict(),
            "rng": gen.get_state(),
            "torch_rng": torch.get_rng_state(),
        }
        _atomic_save(state, ckpt_path)

    if start == 0:
        validate(0)
    segment = cfg.segment or None
    bar = tqdm(
        range(start + 1, cfg.outer_steps + 1),
        initial=start,
        total=cfg.outer_steps,
        desc="meta-training",
        disable=not progress,
        dynamic_ncols=True,
    )
    step = start
    interrupted = False
    try:
        for s in bar:
            t0 = time.perf_counter()
            patches = sampler.sample(cfg.meta_batch, gen).to(dtype)
            batch = task_sampler.sample(patches, gen)
            batch = [(x.to(device), op.to(device=device), y.to(device)) for x, op, y in batch]
            loss, grads = meta_gradient(
                init, batch, cfg.steps, cfg.mode, segment, cfg.loss, cfg.frozen
            )
            if not all(bool(torch.isfinite(g).all()) for g in grads.values()):
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
                log({"step": s, "loss": float(loss), "seconds": time.perf_counter() - t0})
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
        return TrainResult(init_path, step, val_meta, val_random, interrupted=True)
    bar.close()
    save(step)
    points = sorted(set(log_points(cfg.plot_steps)) | {cfg.steps})
    curves = {
        "random init (vanilla DIP: Adam, jitter, EMA)": psnr_curve(random_init, val_tasks, points),
        f"meta init ({step} outer steps)": psnr_curve(init, val_tasks, points),
    }
    plot_curves(plot_path, curves, title=f"validation PSNR, {cfg.val_patches} held-out patches")
    log({"step": step, "curves": curves})
    return TrainResult(init_path, step, val_meta, val_random, interrupted)


def _metadata(cfg: TrainConfig, step: int, val_meta: Any, val_random: Any) -> dict:
    return {
        "source": "metadip train",
        "outer_step": step,
        "train_config": asdict(cfg),
        "val_psnr_meta": val_meta,
        "val_psnr_random": val_random,
    }


# -- command line ------------------------------------------------------------------------------


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Registers ``metadip train`` on the CLI's subparsers."""
    p = sub.add_parser(
        "train",
        help="meta-train an initialization",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--config", default=None, help="TOML file with any of the options below")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    helps = {
        "network": "skip (DIP U-Net) or siren (coordinate network, for MetaSIREN)",
        "steps": "inner steps T",
        "segment": "steps per checkpointed segment (0: ceil(sqrt(T)))",
        "mode": "meta-gradient: " + " | ".join(MODES),
        "meta_batch": "tasks per outer step",
        "outer_lr": "Adam learning rate of the weights",
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
        "init_from": "start from this init file (same network) instead of a random one",
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
    if res.val_meta is not None and res.val_random is not None:
        print(
            f"outer step {res.step}: validation PSNR after {cfg.steps} inner steps: "
            f"meta init {res.val_meta:.2f} dB, random init {res.val_random:.2f} dB"
        )
    print(f"wrote {res.init_path}")
    return 130 if res.interrupted else 0
