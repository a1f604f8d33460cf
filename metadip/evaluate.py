"""``metadip eval``: method × task × image tables and plots, from one command.

Every (patch, task) pair gets one seeded operator and one seeded measurement y, so
every method sees the same y. A *cell* is one (patch, task, method); each finished
cell is appended to ``OUT/results.jsonl`` as soon as it is done, so a rerun skips
it (cells that failed are retried). Then ``table.md`` (mean PSNR and time per task
and method, laid out like the paper's Tables 1-3), ``convergence.png`` (PSNR vs
inner step, log-x: the paper's Fig. 2) and ``grid_<task>.png`` (ground truth, input,
every method with its PSNR: Figs. 3-5) are rebuilt from all rows.

Timing: seconds are wall time of the reconstruction only (measurement, metrics and
the convergence-curve evaluations excluded), *warm*: before a method's first timed
cell of a task family in a process it runs once on a tiny 32×32 problem of that
family, so one-time costs (thread pools, allocator, lazy imports) are not counted.
CUDA runs are synchronized by ``reconstruct``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import sys
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from metadip import baselines, io
from metadip.metrics import psnr, ssim
from metadip.operators import Operator
from metadip.tasks import make_operator

__all__ = [
    "DEFAULT_TASKS",
    "METHODS",
    "EvalConfig",
    "TaskSpec",
    "add_parser",
    "load_patches",
    "parse_task",
    "plot_convergence",
    "run_eval",
    "write_table",
]

METHODS = (
    "metadip",
    "educated",
    "dip50",
    "dip1000",
    "decoder",
    "metasiren",
    "bm3d",
    "admm-bm3d",
    "deepinv-dip",
)
DEFAULT_TASKS = (
    "denoise:15",
    "denoise:25",
    "cs:0.25",
    "cs:0.125",
    "pr:0.25",
    "pr:0.125",
    "inpaint",
    "blur",
)
# Steps at which the convergence curve is sampled (log-spaced, as the plot's x axis).
CURVE_STEPS = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700, 1000)
FINISHED = ("ok", "skipped")
MEASUREMENT_SIGMA = 25.0  # σ of cs / pr / inpaint / blur, on the 0-255 scale (the paper's)
INPAINT_RATIO = 0.5  # observed fraction for the extra inpainting row
COLORS = {
    "metadip": (214, 39, 40),
    "dip50": (31, 119, 180),
    "dip1000": (44, 160, 44),
    "educated": (255, 127, 14),
    "decoder": (23, 190, 207),
    "metasiren": (148, 103, 189),
    "bm3d": (140, 86, 75),
    "admm-bm3d": (227, 119, 194),
    "deepinv-dip": (127, 127, 127),
}


class NotApplicable(Exception):
    """The method does not apply to the task (its cell is recorded as skipped)."""


# -- tasks and data -----------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSpec:
    """A task as written on the command line: ``denoise:15``, ``cs:0.25``, ``inpaint`` ...

    ``sigma`` is on the 0-255 scale; ``ratio`` is m/n (cs, pr) or the observed
    fraction (inpaint).
    """

    spec: str
    task: str
    sigma: float
    ratio: float

    @property
    def family(self) -> str:
        return self.task

    def operator(self, shape: Sequence[int], seed: int) -> Operator:
        return make_operator(
            self.task, tuple(shape), sigma=self.sigma / 255, ratio=self.ratio, seed=seed
        )


def parse_task(spec: str) -> TaskSpec:
    """``denoise:SIGMA``, ``cs:RATIO``, ``pr:RATIO``, ``inpaint[:RATIO]``, ``blur``."""
    name, _, arg = spec.partition(":")
    try:
        value = float(arg) if arg else None
    except ValueError:
        raise ValueError(f"task {spec!r}: {arg!r} after ':' is not a number") from None
    if name == "denoise":
        if value is None or value <= 0:
            raise ValueError(f"task {spec!r}: write denoise:SIGMA with SIGMA > 0 (0-255 scale)")
        return TaskSpec(spec, name, value, 1.0)
    if name in ("cs", "pr"):
        if value is None or not 0 < value <= 1:
            raise ValueError(f"task {spec!r}: write {name}:RATIO with 0 < RATIO <= 1 (m/n)")
        return TaskSpec(spec, name, MEASUREMENT_SIGMA, value)
    if name == "inpaint":
        ratio = INPAINT_RATIO if value is None else value
        if not 0 < ratio <= 1:
            raise ValueError(f"task {spec!r}: the observed fraction must be in (0, 1]")
        return TaskSpec(spec, name, MEASUREMENT_SIGMA, ratio)
    if name == "blur" and value is None:
        return TaskSpec(spec, name, MEASUREMENT_SIGMA, 1.0)
    raise ValueError(
        f"unknown task {spec!r}; expected one of denoise:SIGMA, cs:RATIO, pr:RATIO, "
        "inpaint[:RATIO], blur (e.g. " + ", ".join(DEFAULT_TASKS) + ")"
    )


def cell_seed(patch: str, spec: str) -> int:
    """The seed of the operator and noise of (patch, task): the same for every method."""
    return zlib.crc32(f"{patch}|{spec}".encode()) & 0x7FFFFFFF


def load_patches(
    images: str | Path, n: int, size: int, seed: int = 0, split: str = "val"
) -> list[tuple[str, Tensor]]:
    """``n`` fixed ``(3, size, size)`` patches from the validation (or ``"train"``) split.

    ``images``: a folder, ``"natural"`` or ``"skimage"`` (see ``metadip.data``). Files
    are split into train/validation as in meta-training (10 %, seed 0), so validation
    patches were never trained on; tuning uses the train split. Crops are seeded and
    not augmented.
    """
    from metadip import data

    if n < 1:
        raise ValueError(f"need at least one patch, got {n}")
    train, val = data.load_images(images, channels=3, val_fraction=0.1, seed=0)
    pool = val if split == "val" else train
    sampler = data.PatchSampler(pool, size=size, augment=False)
    offset = 0 if split == "val" else 7919  # tuning crops come from another stream too
    patches = sampler.sample(n, torch.Generator().manual_seed(seed + offset))
    return [(f"{split}{i:02d}", p) for i, p in enumerate(patches)]


def input_view(op: Operator, y: Tensor) -> Tensor:
    """What the method starts from, as an image: y itself, the back-projection Aᵀy, or
    (phase retrieval) the constant image whose energy matches |y|."""
    return baselines.start_point(y[None], op)[0].clamp(0, 1)


# -- methods ------------------------------------------------------------------------------


@dataclass
class EvalConfig:
    """Everything ``run_eval`` needs (the CLI flags have the same names)."""

    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS))
    methods: list[str] = field(default_factory=lambda: ["dip50", "bm3d", "admm-bm3d"])
    images: str = "skimage"
    patches: int = 6
    size: int = 128
    out: str = "eval-out"
    init: str = "default"
    siren_init: str | None = None
    educated_init: str | None = None
    steps: int = 50
    device: str = "cpu"
    seed: int = 0
    tune_patches: int = 1
    tune_size: int = 64
    denoiser: str = "bm3d"
    denoiser_weights: str | None = None
    grid: dict[str, tuple[float, ...]] = field(default_factory=lambda: dict(baselines.ADMM_GRID))
    progress: bool = True
    report_only: bool = False


@dataclass
class Outcome:
    image: Tensor
    seconds: float
    steps: int
    curve: list[tuple[int, float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class Runner:
    """Runs methods on problems; holds what is shared across cells (tuned ADMM settings,
    loaded denoisers, which warm-ups are done)."""

    def __init__(self, cfg: EvalConfig):
        self.cfg = cfg
        self.warm: set[tuple[str, str]] = set()
        self.tuned: dict[str, dict[str, Any]] = {}
        self._denoiser: baselines.Denoiser | None = None
        self.notices: list[str] = []
        self.tuning_path = Path(cfg.out) / "admm_tuning.json"
        if self.tuning_path.is_file():
            self.tuned = json.loads(self.tuning_path.read_text())

    # dispatch
    def run(self, method: str, spec: TaskSpec, x: Tensor, op: Operator, y: Tensor, seed: int):
        fn = self._method(method)
        if (method, spec.family) not in self.warm:
            self._warm_up(method, spec, fn)
            self.warm.add((method, spec.family))
        return fn(spec, x, op, y, seed)

    def _method(self, method: str) -> Callable[..., Outcome]:
        table = {
            "metadip": self._metadip,
            "dip50": lambda *a, **k: self._dip(*a, steps=50, **k),
            "dip1000": lambda *a, **k: self._dip(*a, steps=1000, **k),
            "educated": self._educated,
            "decoder": self._decoder,
            "metasiren": self._metasiren,
            "bm3d": self._bm3d,
            "admm-bm3d": self._admm,
            "deepinv-dip": self._deepinv,
        }
        if method not in table:
            raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
        return table[method]

    def _warm_up(self, method: str, spec: TaskSpec, fn: Callable[..., Outcome]) -> None:
        """One untimed run on a tiny 32×32 problem of the same task family."""
        x = io.bundled_patch("astronaut", 32)
        op = spec.operator(x.shape, seed=1)
        y = op.measure(x, torch.Generator().manual_seed(1))
        with contextlib.suppress(Exception):  # the real cell reports any error
            fn(spec, x, op, y, 1, warmup=True)

    # DIP-type methods through reconstruct()
    def _fit(
        self, x: Tensor, op: Operator, y: Tensor, seed: int, init: Any, steps: int, warmup: bool
    ) -> Outcome:
        from metadip.api import reconstruct

        if warmup:
            reconstruct(y, op, init=init, steps=2, seed=seed, device=self.cfg.device)
            return Outcome(x, 0.0, 2)
        curve: list[tuple[int, float]] = []
        spent = [0.0]
        marks = set(CURVE_STEPS) | {steps}

        def callback(info: Any) -> None:
            if info.step + 1 in marks:
                t0 = time.perf_counter()
                img = info.image()[0].to(device="cpu", dtype=torch.float32)
                curve.append((info.step + 1, psnr(img.clamp(0, 1), x)))
                spent[0] += time.perf_counter() - t0

        rec = reconstruct(
            y, op, init=init, steps=steps, seed=seed, device=self.cfg.device, callback=callback
        )
        image = torch.as_tensor(rec.image).detach().cpu().float().clamp(0, 1)
        # The curve shows f_θ(z); for vanilla DIP the returned image is the EMA average,
        # so the last point is replaced by what is actually returned.
        if curve and curve[-1][0] == steps:
            curve[-1] = (steps, psnr(image, x))
        extra = {"init": rec.init, "restored": len(rec.restored)}
        return Outcome(image, max(rec.seconds - spent[0], 0.0), rec.steps, curve, extra)

    def _dip(self, spec, x, op, y, seed, *, steps: int, warmup: bool = False) -> Outcome:
        return self._fit(x, op, y, seed, "random", steps, warmup)

    def _decoder(self, spec, x, op, y, seed, warmup: bool = False) -> Outcome:
        return self._fit(x, op, y, seed, "decoder", 1000, warmup)

    def _metadip(self, spec, x, op, y, seed, warmup: bool = False) -> Outcome:
        return self._fit(x, op, y, seed, self.cfg.init, self.cfg.steps, warmup)

    def _educated(self, spec, x, op, y, seed, warmup: bool = False) -> Outcome:
        from metadip.init import MetaInit, default_init_path

        path = self.cfg.educated_init
        if path is None:
            if spec.task != "denoise":
                raise NotApplicable(
                    f"no Educated-DIP init ships for {spec.task}; pass --educated-init PATH "
                    "(from `metadip train --method educated`)"
                )
            path = str(default_init_path("denoise"))
        init = MetaInit.load(path)
        if not init.config.guided:
            raise ValueError(f"--educated-init {path} is not an Educated-DIP (image-input) init")
        return self._fit(x, op, y, seed, init, self.cfg.steps, warmup)

    def _metasiren(self, spec, x, op, y, seed, warmup: bool = False) -> Outcome:
        from metadip.init import MetaInit

        path = self.cfg.siren_init
        if path is None:
            raise FileNotFoundError(
                "metasiren needs --siren-init PATH: an init file with a SIREN network "
                "(network kind 'siren'), e.g. from `metadip train --network siren`; none was given"
            )
        init = MetaInit.load(path)
        if init.config.kind != "siren":
            raise ValueError(
                f"--siren-init {path} holds a {init.config.kind!r} network, expected 'siren'"
            )
        return self._fit(x, op, y, seed, init, self.cfg.steps, warmup)

    # classical baselines
    def _bm3d(self, spec, x, op, y, seed, warmup: bool = False) -> Outcome:
        if spec.task != "denoise":
            raise NotApplicable("bm3d denoises; for other tasks see admm-bm3d")
        t0 = time.perf_counter()
        out = baselines.bm3d_denoise(y, spec.sigma / 255)
        return Outcome(out, time.perf_counter() - t0, 1)

    def denoiser(self) -> baselines.Denoiser:
        if self._denoiser is None:
            self._denoiser = baselines.load_denoiser(self.cfg.denoiser, self.cfg.denoiser_weights)
        return self._denoiser

    def _tuning_key(self, spec: TaskSpec) -> str:
        c = self.cfg
        grid = json.dumps({k: list(v) for k, v in c.grid.items()}, sort_keys=True)
        return f"{spec.spec}|{c.denoiser}|{c.tune_patches}x{c.tune_size}|seed{c.seed}|{grid}"

    def admm_params(self, spec: TaskSpec) -> baselines.AdmmParams:
        """The grid-searched setting for this task, tuned once on the tuning split (patches
        from training images, never the evaluated ones) and then frozen in
        ``OUT/admm_tuning.json``."""
        key = self._tuning_key(spec)
        if key not in self.tuned:
            den = self.denoiser()
            problems = []
            for name, xt in load_patches(
                self.cfg.images, self.cfg.tune_patches, self.cfg.tune_size, self.cfg.seed, "train"
            ):
                s = cell_seed(name, spec.spec)
                opt = spec.operator(xt.shape, s)
                problems.append((xt, opt, opt.measure(xt, torch.Generator().manual_seed(s))))

            def score(strength: float, rho: float, iters: Sequence[int]) -> dict[int, float]:
                totals: dict[int, float] = defaultdict(float)
                for xt, opt, yt in problems:
                    outs = baselines.pnp_admm(yt, opt, den, strength, rho, max(iters), record=iters)
                    for k in iters:
                        totals[k] += psnr(outs[k], xt) / len(problems)
                return dict(totals)

            t0 = time.perf_counter()
            best, cells = baselines.grid_search(score, self.cfg.grid)
            self.tuned[key] = {
                "task": spec.spec,
                "best": best.to_dict(),
                "cells": cells,
                "tuning": f"{self.cfg.tune_patches} patch(es) of {self.cfg.tune_size}x"
                f"{self.cfg.tune_size} from the train split",
                "seconds": time.perf_counter() - t0,
            }
            self.tuning_path.parent.mkdir(parents=True, exist_ok=True)
            self.tuning_path.write_text(json.dumps(self.tuned, indent=1))
        b = self.tuned[key]["best"]
        return baselines.AdmmParams(float(b["strength"]), float(b["rho"]), int(b["iters"]))

    def _admm(self, spec, x, op, y, seed, warmup: bool = False) -> Outcome:
        if spec.task == "denoise":
            raise NotApplicable("PnP-ADMM on denoising is the denoiser itself: see bm3d")
        den = self.denoiser()
        if warmup:
            baselines.pnp_admm(y, op, den, 25.0, 1.0, 1)
            return Outcome(x, 0.0, 1)
        params = self.admm_params(spec)
        t0 = time.perf_counter()
        out = baselines.pnp_admm(y, op, den, params.strength, params.rho, params.iters)
        seconds = time.perf_counter() - t0
        extra = {"admm": params.to_dict(), "denoiser": self.cfg.denoiser}
        return Outcome(out[params.iters], seconds, params.iters, extra=extra)

    def _deepinv(self, spec, x, op, y, seed, warmup: bool = False) -> Outcome:
        try:
            import deepinv as dinv
        except ImportError:
            raise NotApplicable("deepinv is not installed (optional peer)") from None
        steps = 2 if warmup else 1000
        shape = tuple(op.in_shape)
        gen = dinv.models.ConvDecoder(img_size=shape, in_size=[4, 4], channels=64)
        model = dinv.models.DeepImagePrior(
            gen, [64, 4, 4], iterations=steps, learning_rate=1e-2, verbose=False
        )
        if op.linear:
            physics = dinv.physics.LinearPhysics(A=op.forward, A_adjoint=op.adjoint)
        else:
            physics = dinv.physics.Physics(A=op.forward)
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        out = model(y[None], physics)
        seconds = time.perf_counter() - t0
        return Outcome(out[0].detach().cpu().float().clamp(0, 1), seconds, steps)


# -- results file -------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("metadip", "numpy", "bm3d", "deepinv"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[pkg] = metadata.version(pkg)
    return out


def _device_name(device: str) -> str:
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(dev)}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def cell_key(row: dict[str, Any]) -> tuple[str, str, str, int]:
    return (row["patch"], row["task"], row["method"], int(row["size"]))


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a results.jsonl; a later row for the same cell replaces an earlier one.
    A truncated last line (a run killed mid-write) is ignored."""
    path = Path(path)
    if not path.is_file():
        return []
    rows: dict[tuple, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        rows[cell_key(row)] = row
    return list(rows.values())


def _slug(spec: str) -> str:
    return spec.replace(":", "_").replace(".", "p")


def run_eval(cfg: EvalConfig, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Runs every unfinished cell, appends it to ``OUT/results.jsonl``, then writes the
    table and plots from all rows. Returns the rows of this configuration."""
    specs = [parse_task(t) for t in cfg.tasks]
    for m in cfg.methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    done = {cell_key(r) for r in read_rows(results) if r.get("status") in FINISHED}
    patches = load_patches(cfg.images, cfg.patches, cfg.size, cfg.seed)
    runner = Runner(cfg)
    versions = _versions()
    device = _device_name(cfg.device)
    todo = [
        (spec, name, method)
        for spec in specs
        for name, _ in patches
        for method in cfg.methods
        if (name, spec.spec, method, cfg.size) not in done and not cfg.report_only
    ]
    if len(todo) < len(specs) * len(patches) * len(cfg.methods):
        skipped = len(specs) * len(patches) * len(cfg.methods) - len(todo)
        log(f"resuming: {skipped} finished cell(s) in {results} are kept")
    by_name = dict(patches)
    problems: dict[tuple[str, str], tuple[Operator, Tensor, int]] = {}
    noticed: set[str] = set()
    bar = tqdm(todo, desc="eval", unit="cell", disable=not cfg.progress)
    for spec, name, method in bar:
        bar.set_postfix_str(f"{spec.spec} {name} {method}")
        x = by_name[name]
        if (name, spec.spec) not in problems:
            seed = cell_seed(name, spec.spec)
            op = spec.operator(x.shape, seed)
            y = op.measure(x, torch.Generator().manual_seed(seed))
            problems = {(name, spec.spec): (op, y, seed)}  # keep one (PR matrices are big)
            folder = out / "images" / _slug(spec.spec)
            io.save_image(folder / f"{name}_truth.png", x)
            io.save_image(folder / f"{name}_input.png", input_view(op, y))
        op, y, seed = problems[(name, spec.spec)]
        row: dict[str, Any] = {
            "patch": name,
            "task": spec.spec,
            "method": method,
            "size": cfg.size,
            "images": str(cfg.images),
            "seed": seed,
            "psnr_input": psnr(input_view(op, y), x),
        }
        try:
            res = runner.run(method, spec, x, op, y, seed)
        except NotApplicable as e:
            row.update(status="skipped", reason=str(e))
            if method not in noticed:
                log(f"notice: {method} skipped for {spec.spec}: {e}")
                noticed.add(method)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # a failing method is recorded in its cell; the run goes on
            row.update(status="error", error=f"{type(e).__name__}: {e}")
            log(f"{method} failed on {spec.spec} {name}: {type(e).__name__}: {e}")
        else:
            img = res.image.detach().cpu().float().clamp(0, 1)
            io.save_image(out / "images" / _slug(spec.spec) / f"{name}_{method}.png", img)
            row.update(
                status="ok",
                psnr=psnr(img, x),
                ssim=ssim(img, x),
                seconds=res.seconds,
                steps=res.steps,
                curve=res.curve,
                **res.extra,
            )
        row.update(device=device, versions=versions, time=time.strftime("%Y-%m-%dT%H:%M:%SZ"))
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")
    rows = [
        r
        for r in read_rows(results)
        if r["task"] in cfg.tasks and r["method"] in cfg.methods and r["size"] == cfg.size
    ]
    write_table(rows, out / "table.md", cfg)
    plot_convergence(rows, out / "convergence.png")
    for spec in specs:
        write_grid(rows, out, spec.spec, patches[0][0])
    log(f"wrote {out / 'table.md'}, {out / 'convergence.png'} and grid_*.png in {out}")
    return rows


# -- table --------------------------------------------------------------------------------

SECTIONS = (
    ("Denoising (paper Table 1)", "denoise"),
    ("Compressive sensing, σ = 25 (paper Table 2)", "cs"),
    ("Compressive phase retrieval, σ = 25 (paper Table 3)", "pr"),
    ("Extra tasks (σ = 25): inpainting (50 % of pixels observed), Gaussian deblurring", None),
)


def _summary(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["task"], r["method"])].append(r)
    out = {}
    for key, rs in groups.items():
        ok = [r for r in rs if r.get("status") == "ok"]
        out[key] = {
            "n": len(ok),
            "psnr": float(np.mean([r["psnr"] for r in ok])) if ok else math.nan,
            "seconds": float(np.mean([r["seconds"] for r in ok])) if ok else math.nan,
            "status": "ok"
            if ok
            else ("skipped" if all(r.get("status") == "skipped" for r in rs) else "error"),
            "error": next((r.get("error") for r in rs if r.get("status") == "error"), None),
        }
    return out


def write_table(rows: list[dict[str, Any]], path: str | Path, cfg: EvalConfig) -> Path:
    """Mean PSNR (dB) and mean warm time (s) per task and method, one table per task
    family as in the paper; ``—`` = not applicable, ``error`` = see the notes."""
    summ = _summary(rows)
    n_patches = len({r["patch"] for r in rows})
    devices = sorted({r["device"] for r in rows if "device" in r})
    lines = [
        "# metadip eval",
        "",
        f"{n_patches} validation patch(es) of {cfg.size}×{cfg.size} from `{cfg.images}`; "
        "PSNR in dB (mean over patches), time in seconds (mean, warm, reconstruction only). "
        "A count in brackets means fewer patches finished for that cell.",
        f"Device: {'; '.join(devices) or 'n/a'}.",
        "",
    ]
    errors: dict[str, str] = {}
    methods = [m for m in METHODS if m in cfg.methods]
    for title, family in SECTIONS:
        tasks = [
            t
            for t in cfg.tasks
            if (parse_task(t).task == family)
            or (family is None and parse_task(t).task in ("inpaint", "blur"))
        ]
        if not tasks:
            continue
        head = "| method | " + " | ".join(f"{t} PSNR | {t} time" for t in tasks) + " |"
        lines += [f"## {title}", "", head, "|---" * (1 + 2 * len(tasks)) + "|"]
        for m in methods:
            cells = []
            for t in tasks:
                s = summ.get((t, m))
                if s is None:
                    cells += ["not run", ""]
                elif s["status"] == "skipped":
                    cells += ["—", "—"]
                elif s["status"] == "error":
                    cells += ["error", ""]
                    errors.setdefault(m, s["error"] or "")
                else:
                    count = "" if s["n"] >= n_patches else f" ({s['n']})"
                    cells += [f"{s['psnr']:.2f}{count}", f"{s['seconds']:.2f}"]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    tuned = [r for r in rows if r.get("method") == "admm-bm3d" and r.get("admm")]
    if tuned:
        per_task = {r["task"]: r["admm"] for r in tuned}
        lines += [
            "PnP-ADMM settings (grid-searched on the tuning split, then frozen): "
            + "; ".join(
                f"{t}: σ_d {p['strength']:g}, ρ {p['rho']:g}, {p['iters']} it"
                for t, p in per_task.items()
            ),
            "",
        ]
    if errors:
        lines += ["Errors:", ""] + [f"- {m}: {e}" for m, e in errors.items()] + [""]
    path = Path(path)
    path.write_text("\n".join(lines))
    return path


# -- plots (Pillow only: matplotlib is not a dependency) ----------------------------------


def _font() -> Any:
    from PIL import ImageFont

    return ImageFont.load_default()


def plot_convergence(rows: list[dict[str, Any]], path: str | Path) -> Path | None:
    """PSNR vs inner step (log x), one panel per task, one line per method (mean over
    patches at each sampled step). Returns None when no row has a curve."""
    from PIL import Image, ImageDraw

    curves: dict[str, dict[str, dict[int, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for r in rows:
        for step, value in r.get("curve") or []:
            if math.isfinite(value):
                curves[r["task"]][r["method"]][int(step)].append(float(value))
    if not curves:
        return None
    tasks = list(curves)
    # One x range for every panel, so speeds compare across tasks.
    x_top = math.log10(max(10, *(s for t in curves.values() for pts in t.values() for s in pts)))
    pw, ph, margin = 360, 260, 44
    cols = min(4, len(tasks))
    nrows = math.ceil(len(tasks) / cols)
    img = Image.new("RGB", (cols * pw, nrows * ph), "white")
    draw = ImageDraw.Draw(img)
    font = _font()
    for i, task in enumerate(tasks):
        ox, oy = (i % cols) * pw, (i // cols) * ph
        series = {
            m: sorted((s, float(np.mean(v))) for s, v in pts.items())
            for m, pts in curves[task].items()
        }
        values = [v for pts in series.values() for _, v in pts]
        x_lo, x_hi = 0.0, x_top
        y_lo, y_hi = math.floor(min(values)) - 1, math.ceil(max(values)) + 1
        left, top, right, bottom = ox + margin, oy + 24, ox + pw - 12, oy + ph - margin + 8

        box = (x_lo, x_hi, y_lo, y_hi, left, top, right, bottom)

        def px(step: float, value: float, b: tuple = box) -> tuple[float, float]:
            # data (log10 step, PSNR) -> pixel inside this panel's frame
            fx = (math.log10(step) - b[0]) / (b[1] - b[0])
            fy = (value - b[2]) / (b[3] - b[2])
            return b[4] + fx * (b[6] - b[4]), b[7] - fy * (b[7] - b[5])

        draw.rectangle([left, top, right, bottom], outline="black")
        draw.text((left, oy + 6), f"{task}: PSNR (dB) vs inner step", fill="black", font=font)
        for d in range(int(x_hi) + 1):
            gx, _ = px(10**d, y_lo)
            draw.line([gx, bottom, gx, bottom + 4], fill="black")
            draw.text((gx - 8, bottom + 6), f"{10**d}", fill="black", font=font)
        for v in range(int(y_lo), int(y_hi) + 1, max(1, (int(y_hi) - int(y_lo)) // 5)):
            _, gy = px(1, v)
            draw.line([left - 4, gy, left, gy], fill="black")
            draw.text((ox + 6, gy - 6), f"{v}", fill="black", font=font)
        for j, (m, pts) in enumerate(series.items()):
            color = COLORS.get(m, (0, 0, 0))
            xy = [px(s, v) for s, v in pts]
            if len(xy) > 1:
                draw.line(xy, fill=color, width=2)
            for cx, cy in xy:
                draw.ellipse([cx - 2, cy - 2, cx + 2, cy + 2], fill=color)
            draw.text((right - 80, top + 6 + 12 * j), m, fill=color, font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def write_grid(rows: list[dict[str, Any]], out: Path, spec: str, patch: str) -> Path | None:
    """``OUT/grid_<task>.png``: ground truth, the input view, then every method that
    finished on ``patch`` with its PSNR."""
    folder = out / "images" / _slug(spec)
    truth, view = folder / f"{patch}_truth.png", folder / f"{patch}_input.png"
    if not truth.is_file():
        return None
    x = io.load_image(truth)
    panels = [("ground truth", x)]
    if view.is_file():
        v = io.load_image(view)
        panels.append((f"input {psnr(v, x):.1f} dB", v))
    for r in rows:
        f = folder / f"{patch}_{r['method']}.png"
        if r["task"] == spec and r["patch"] == patch and r.get("status") == "ok" and f.is_file():
            panels.append((f"{r['method']} {r['psnr']:.1f} dB", io.load_image(f)))
    return io.save_grid(out / f"grid_{_slug(spec)}.png", panels)


# -- command line -------------------------------------------------------------------------


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Registers ``metadip eval`` on the CLI's subparsers."""
    d = EvalConfig()
    p = sub.add_parser(
        "eval",
        help="method x task x patch tables and plots (the paper's Tables 1-3)",
        description=__doc__.split("\n\n")[0],
    )
    # dest eval_tasks: the CLI checks args.tasks against the single-task names
    p.add_argument(
        "--tasks",
        dest="eval_tasks",
        type=_csv,
        default=list(DEFAULT_TASKS),
        help="comma-separated (default: " + ",".join(DEFAULT_TASKS) + ")",
    )
    p.add_argument(
        "--methods",
        type=_csv,
        default=d.methods,
        help=f"comma-separated from {','.join(METHODS)} (default: {','.join(d.methods)})",
    )
    p.add_argument(
        "--images",
        default=d.images,
        help="image folder (validation files are held out as in training), 'natural' "
        "(../shared/data/natural-train) or 'skimage' (default)",
    )
    p.add_argument("--patches", type=int, default=d.patches, help="validation patches")
    p.add_argument("--size", type=int, default=d.size, help="patch size (pixels)")
    p.add_argument("--out", default=d.out, help="output folder (results.jsonl, table.md, plots)")
    p.add_argument("--init", default=d.init, help="metadip: 'default' or an init file")
    p.add_argument("--siren-init", default=None, help="metasiren: a SIREN init file")
    p.add_argument(
        "--educated-init",
        default=None,
        help="educated: an Educated-DIP init file (default: the shipped denoising one)",
    )
    p.add_argument(
        "--steps", type=int, default=None, help="metadip / metasiren / educated steps (default 50)"
    )
    p.add_argument("--device", default=d.device)
    p.add_argument("--seed", type=int, default=d.seed, help="patch sampling seed")
    p.add_argument("--tune-patches", type=int, default=d.tune_patches)
    p.add_argument("--tune-size", type=int, default=d.tune_size, help="PnP-ADMM tuning size")
    p.add_argument(
        "--denoiser",
        default=d.denoiser,
        help="PnP-ADMM denoiser: bm3d, gaussian, or module:attr / file.py:attr (your own)",
    )
    p.add_argument("--denoiser-weights", default=None, help="state_dict for --denoiser")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: rebuild table.md and the plots from OUT/results.jsonl",
    )
    p.set_defaults(func=cmd_eval)
    return p


def cmd_eval(args: argparse.Namespace) -> int:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.patches < 1 or args.size < 8:
        raise ValueError(f"need --patches >= 1 and --size >= 8, got {args.patches}, {args.size}")
    cfg = EvalConfig(
        tasks=args.eval_tasks,
        methods=args.methods,
        images=args.images,
        patches=args.patches,
        size=args.size,
        out=args.out,
        init=args.init,
        siren_init=args.siren_init,
        educated_init=args.educated_init,
        steps=args.steps or 50,
        device=args.device,
        seed=args.seed,
        tune_patches=args.tune_patches,
        tune_size=args.tune_size,
        denoiser=args.denoiser,
        denoiser_weights=args.denoiser_weights,
        progress=not args.no_progress,
        report_only=args.report_only,
    )

    def log(msg: str) -> None:
        print(msg, file=sys.stderr)

    run_eval(cfg, log=log)
    return 0
