"""The evaluated methods, one adapter each, run on a problem by ``Runner``: DIP-type
methods through ``reconstruct`` (with a PSNR curve), BM3D, PnP-ADMM with a grid-searched
and then frozen setting, deepinv's DIP.

Timing: seconds are wall time of the reconstruction only (measurement, metrics and
the convergence-curve evaluations excluded), *warm*: before a method's first timed
cell of a task family in a process it runs once on a tiny 32×32 problem of that
family, so one-time costs (thread pools, allocator, lazy imports) are not counted.
CUDA runs are synchronized by ``reconstruct``.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from metadip import baselines, denoisers, io
from metadip.evaluate.problems import cell_seed, default_split, load_patches
from metadip.metrics import PsnrTrack, psnr
from metadip.operators import Operator
from metadip.tasks import DEFAULT_TASKS, TaskSpec

__all__ = ["CURVE_STEPS", "METHODS", "EvalConfig", "NotApplicable", "Outcome", "Runner"]

METHODS = (
    "metadip",
    "educated",
    "dip50",
    "dip1000",
    "decoder",
    "metasiren",
    "meta-classical",
    "solver",
    "solver-converged",
    "bm3d",
    "admm-bm3d",
    "deepinv-dip",
)
# Steps at which the convergence curve is sampled (log-spaced, as the plot's x axis).
CURVE_STEPS = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700, 1000)


class NotApplicable(Exception):
    """The method does not apply to the task (its cell is recorded as skipped)."""


@dataclass
class EvalConfig:
    """Everything ``run_eval`` needs (the CLI flags have the same names)."""

    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS))
    methods: list[str] = field(default_factory=lambda: ["dip50", "bm3d", "admm-bm3d"])
    images: str = "skimage"
    # None: "val" for the project's image sets, "all" for a user's folder (default_split)
    split: str | None = None
    patches: int | None = None  # None: 6 crops ("val" / "train"), every image ("all")
    size: int = 128
    out: str = "eval-out"
    init: str = "default"
    siren_init: str | None = None
    classical_init: str | None = None
    converged_iters: int = 300  # solver-converged: the plain solver's iterations
    educated_init: str | None = None
    steps: int = 50
    samples: int = 1
    device: str = "cpu"
    seed: int = 0
    tune_patches: int = 1
    tune_size: int = 64
    denoiser: str = "bm3d"
    denoiser_weights: str | None = None
    grid: dict[str, tuple[float, ...]] = field(default_factory=lambda: dict(baselines.ADMM_GRID))
    progress: bool = True
    report_only: bool = False

    @property
    def resolved_split(self) -> str:
        """``split``, or the default for ``images`` (``"val"`` for the project's sets)."""
        return self.split or default_split(self.images)


@dataclass
class Outcome:
    image: Tensor
    seconds: float
    steps: int
    curve: list[tuple[int, float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    std: Tensor | None = None  # per-pixel std over chains (DIP-type methods, samples > 1)


class Runner:
    """Runs methods on problems; holds what is shared across cells (tuned ADMM settings,
    loaded denoisers, which warm-ups are done)."""

    def __init__(self, cfg: EvalConfig):
        self.cfg = cfg
        self.warm: set[tuple[str, str]] = set()
        self.tuned: dict[str, dict[str, Any]] = {}
        self._denoiser: denoisers.Denoiser | None = None
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
            "meta-classical": self._meta_classical,
            "solver": lambda *a, **k: self._solver(*a, converged=False, **k),
            "solver-converged": lambda *a, **k: self._solver(*a, converged=True, **k),
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
        track = PsnrTrack(x.float(), (*CURVE_STEPS, steps))
        rec = reconstruct(
            y,
            op,
            init=init,
            steps=steps,
            seed=seed,
            device=self.cfg.device,
            callback=track,
            samples=self.cfg.samples,
        )
        curve = track.curve
        image = torch.as_tensor(rec.image).detach().cpu().float().clamp(0, 1)
        # The curve shows f_θ(z) (of the first chain with samples > 1); the returned image
        # is the EMA average for vanilla DIP, the posterior mean with samples > 1, so the
        # last point is replaced by what is actually returned.
        if curve and curve[-1][0] == steps:
            curve[-1] = (steps, psnr(image, x))
        extra = {"init": rec.init, "restored": len(rec.restored)}
        seconds = max(rec.seconds - track.seconds, 0.0)
        std = None if rec.std is None else torch.as_tensor(rec.std).detach().cpu().float()
        return Outcome(image, seconds, rec.steps, curve, extra, std)

    def _dip(self, spec, x, op, y, seed, *, steps: int, warmup: bool = False) -> Outcome:
        return self._fit(x, op, y, seed, "random", steps, warmup)

    def _decoder(self, spec, x, op, y, seed, warmup: bool = False) -> Outcome:
        return self._fit(x, op, y, seed, "decoder", 1000, warmup)

    def _metadip(self, spec, x, op, y, seed, warmup: bool = False) -> Outcome:
        return self._fit(x, op, y, seed, self.cfg.init, self.cfg.steps, warmup)

    def _educated(self, spec, x, op, y, seed, warmup: bool = False) -> Outcome:
        from metadip.init import MetaInit
        from metadip.shipped import default_init_path

        path = self.cfg.educated_init
        if path is None:
            path = str(default_init_path(spec.task, op.in_shape[0], op.linear))
            init = MetaInit.load(path)
            if not init.config.guided:
                raise NotApplicable(
                    f"no Educated-DIP init ships for {spec.task}; pass --educated-init PATH "
                    "(from `metadip train --method educated`)"
                )
        else:
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

    def _classical_init(self):
        from metadip.init import MetaInit

        path = self.cfg.classical_init
        if path is None:
            raise FileNotFoundError(
                "meta-classical, solver and solver-converged need --classical-init PATH: an "
                "init file with a classical solver (e.g. from `metadip train --config "
                "configs/classical_inpaint.toml`); none was given"
            )
        init = MetaInit.load(path)
        if init.config.solver == "none":
            raise ValueError(f"--classical-init {path} has no classical solver (solver 'none')")
        return init

    def _meta_classical(self, spec, x, op, y, seed, warmup: bool = False) -> Outcome:
        return self._fit(x, op, y, seed, self._classical_init(), self.cfg.steps, warmup)

    def _solver(self, spec, x, op, y, seed, *, converged: bool, warmup: bool = False) -> Outcome:
        """The classical init's solver alone, started from ``Aᵀy``: as many iterations as
        the meta-learned one runs, or ``converged_iters``."""
        from dataclasses import replace

        from metadip.classical import check_solver_operator, solver_for

        config = self._classical_init().config
        check_solver_operator(op)
        iters = self.cfg.converged_iters if converged else config.solver_iters
        t0 = time.perf_counter()
        with torch.no_grad():
            solve = solver_for(replace(config, solver_iters=iters), op, y[None])
            image = solve(op.adjoint(y)[None])[0].clamp(0, 1)
        return Outcome(image, time.perf_counter() - t0, iters)

    # classical baselines
    def _bm3d(self, spec, x, op, y, seed, warmup: bool = False) -> Outcome:
        if spec.task != "denoise":
            raise NotApplicable("bm3d denoises; for other tasks see admm-bm3d")
        t0 = time.perf_counter()
        out = denoisers.bm3d_denoise(y, spec.sigma / 255)
        return Outcome(out, time.perf_counter() - t0, 1)

    def denoiser(self) -> denoisers.Denoiser:
        if self._denoiser is None:
            self._denoiser = denoisers.load_denoiser(self.cfg.denoiser, self.cfg.denoiser_weights)
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
            # A user's folder is all evaluated: tune on the project's training images.
            source = "auto" if self.cfg.resolved_split == "all" else self.cfg.images
            for name, xt in load_patches(
                source, self.cfg.tune_patches, self.cfg.tune_size, self.cfg.seed, "train"
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
