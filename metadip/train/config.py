"""The options of ``metadip train`` (TOML keys and ``--flags`` share these names)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from metadip.losses import LOSSES as INNER_LOSSES
from metadip.losses import SURE_TASKS
from metadip.meta import LOSSES, MODES
from metadip.netconfig import KINDS, NetConfig
from metadip.rules import RULES as UPDATE_RULES
from metadip.tasks import parse_assignments, parse_mixture

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["METHODS", "TrainConfig"]

# "maml": meta-learn a DIP initialization through the inner loop (MetaDIP).
# "educated": pretrain an image-input network on simulated pairs, fine-tuned per
# measurement at reconstruction time (Educated DIP).
METHODS = ("maml", "educated")
RULES = tuple(UPDATE_RULES)
# Per method: the inner (fine-tune) rule and its learning rate when not given.
METHOD_DEFAULTS = {
    "maml": {"rule": "sgd", "inner_lr": 1.0},
    "educated": {"rule": "adam", "inner_lr": 1e-4},
}

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
RESUMABLE = {
    # The inner rule's starting values: a resumed run takes its tensors from the checkpoint.
    "rule",
    "inner_lr",
    "inner_loss",
    "mode",
    "segment",
    "outer_steps",
    "outer_lr_min",
    "val_every",
    "ckpt_every",
    "plot_steps",
    "device",
    "threads",
    "out",
}


@dataclass
class TrainConfig:
    """Every option of ``metadip train`` (TOML keys and ``--flags`` have these names).

    ``method="maml"`` meta-trains through ``steps`` inner steps (outer steps = meta-steps,
    ``meta_batch`` tasks each); ``method="educated"`` pretrains an image-input network
    (outer steps = supervised steps on ``meta_batch`` simulated pairs) and stores the
    fine-tune rule ``rule`` / ``inner_lr`` / ``steps`` with it. ``rule`` and ``inner_lr``
    left empty / 0 take the method's default (maml: sgd, 1.0; educated: adam, 1e-4).
    ``outer_lr_min`` > 0 cosine-anneals the outer learning rate from ``outer_lr`` to it
    over ``outer_steps``; ``clip`` > 0 clips the norm of each outer gradient to it.
    """

    method: str = "maml"
    # network
    network: str = "skip"  # "skip" (DIP U-Net), "siren" (MetaSIREN) or "decoder" (Deep Decoder)
    channels: int = 3
    width: int = 32
    depth: int = 4
    num_fourier: int = 16
    # a classical solver after the network (metadip.classical): "none", "gd" or "red"
    solver: str = "none"
    solver_iters: int = 0
    solver_step: float = 1.0
    solver_weight: float = 0.0
    # inner loop (initial values of the learned hyper-parameters)
    steps: int = 10
    rule: str = ""
    inner_lr: float = 0.0
    inner_loss: str = "mse"
    momentum: float = 0.9
    tv_weight: float = 0.0
    fourier_scale: float = 2.0
    # meta-gradient
    mode: str = "auto"
    segment: int = 0  # 0: ⌈√steps⌉ (auto: planned from the memory available)
    loss: str = "l2"
    frozen: list[str] = field(default_factory=list)
    # warm start: an init file (same network) whose weights and hyper-parameters start training
    init_from: str = ""
    # outer loop
    outer_steps: int = 300
    meta_batch: int = 4
    outer_lr: float = 1e-3
    outer_lr_min: float = 0.0
    hyper_lr: float = 1e-2
    clip: float = 0.0  # > 0: clip the outer gradient's norm to this
    # data and tasks
    data: str = "auto"
    patch: int = 64
    val_fraction: float = 0.1
    # The train/validation split by file. Apart from ``seed`` so that runs of other seeds
    # hold out (and validate on) the same photos: with the split tied to ``seed``, a run
    # of seed 2 trained on 13 of the 17 photos that seed 0 holds out.
    split_seed: int = 0
    tasks: dict[str, float] = field(default_factory=lambda: {"denoise": 1.0})
    sigma: list[float] = field(default_factory=lambda: [25.0, 25.0])
    ratio: list[float] = field(default_factory=lambda: [0.25, 0.25])
    mono_fraction: float = 0.0  # educated: share of gray training pairs
    # educated: the network's guide image ("adjoint": Aᵀy; "tv": metadip.guide.tv_estimate
    # with guide_iters steps at TV weight guide_weights[task], 1.0 for tasks not listed)
    guide: str = "adjoint"
    guide_iters: int = 50
    guide_weights: dict[str, float] = field(default_factory=dict)
    # validation, output, machine
    val_patches: int = 8
    val_patch: int = 0  # 0: the training patch size
    val_every: int = 25
    ckpt_every: int = 10
    plot_steps: int = 100
    out: str = "metadip-train"
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0
    threads: int = 0  # 0: torch's default

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        defaults = METHOD_DEFAULTS[self.method]
        self.rule = self.rule or defaults["rule"]
        self.inner_lr = self.inner_lr or defaults["inner_lr"]
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {self.rule!r}")
        if self.inner_loss not in INNER_LOSSES:
            raise ValueError(f"inner_loss must be one of {INNER_LOSSES}, got {self.inner_loss!r}")
        if self.method == "educated" and self.solver != "none":
            raise ValueError("a classical solver is meta-trained with method 'maml'")
        NetConfig(**self.solver_options)  # the solver's own checks, before any work
        if self.method == "educated" and self.network != "skip":
            raise ValueError(f"method 'educated' trains the skip network, not a {self.network}")
        if self.guide != "adjoint" and self.method != "educated":
            raise ValueError(
                f"guide {self.guide!r} is an Educated-DIP input: use method 'educated'"
            )
        NetConfig(input="image", guide=self.guide, guide_iters=self.guide_iters)
        if isinstance(self.guide_weights, str):  # the --guide-weights flag: cs=1,pr=0.3
            self.guide_weights = parse_assignments(self.guide_weights, "guide_weights", "WEIGHT")
        bad = {k: v for k, v in self.guide_weights.items() if not (v >= 0 and math.isfinite(v))}
        if bad:
            raise ValueError(f"guide_weights must be finite numbers >= 0, got {bad}")
        if self.val_patch < 0:
            raise ValueError(f"val_patch must be >= 0 (0 = patch), got {self.val_patch}")
        if not (self.clip >= 0 and math.isfinite(self.clip)):
            raise ValueError(f"clip must be a finite number >= 0 (0 = off), got {self.clip}")
        if not 0 <= self.outer_lr_min <= self.outer_lr:
            raise ValueError(
                f"outer_lr_min must be in [0, outer_lr={self.outer_lr}], got {self.outer_lr_min}"
            )
        if not 0 <= self.mono_fraction <= 1:
            raise ValueError(f"mono_fraction must be in [0, 1], got {self.mono_fraction}")
        self.tasks = parse_mixture(self.tasks)
        unknown = set(self.guide_weights) - set(self.tasks)
        if unknown:
            raise ValueError(
                f"guide_weights names tasks not trained: {sorted(unknown)} (tasks: "
                f"{sorted(self.tasks)})"
            )
        if self.inner_loss == "sure" and (
            self.method != "educated" or not set(self.tasks) <= set(SURE_TASKS)
        ):
            raise ValueError(
                "inner_loss 'sure' is for method 'educated' on denoising and inpainting "
                f"tasks only, got method {self.method!r} with tasks {sorted(self.tasks)}"
            )
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
        if self.network not in KINDS:
            raise ValueError(f"network must be one of {KINDS}, got {self.network!r}")
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

    @property
    def solver_options(self) -> dict[str, Any]:
        """The ``NetConfig`` fields of the classical solver (``metadip.classical``)."""
        return {
            "solver": self.solver,
            "solver_iters": self.solver_iters,
            "solver_step": self.solver_step,
            "solver_weight": self.solver_weight,
        }

    def outer_lr_at(self, step: int) -> float:
        """The outer learning rate at outer step ``step`` (1-based): constant, or cosine
        from ``outer_lr`` down to ``outer_lr_min`` at ``outer_steps``."""
        if self.outer_lr_min <= 0:
            return self.outer_lr
        frac = min(max(step - 1, 0) / max(self.outer_steps - 1, 1), 1.0)
        lo, hi = self.outer_lr_min, self.outer_lr
        return lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * frac))

    @property
    def validation_patch(self) -> int:
        return self.val_patch or self.patch

    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """From a flat dict or one with sections (``[network]``, ``[outer]`` ...) one level
        deep; ``tasks`` and ``guide_weights`` may be tables ``{name = value}``."""
        flat: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, dict) and k not in ("tasks", "guide_weights"):
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
