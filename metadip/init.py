"""Initializations: network weights plus the fitting rule that starts from them.

A ``MetaInit`` holds everything one reconstruction needs besides the data: the
network config and weights, the update rule with its per-step per-parameter
learning rates (log-parametrized), momentum, TV weight, the Fourier-feature
basis and scale, the input-noise seed, and provenance metadata. Files are
safetensors with the config and metadata as JSON in the header. The shipped files and
the names ``"default"``, ``"large"``, ``"random"`` resolve in ``metadip.shipped``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor

from metadip.dihedral import check_ensemble
from metadip.losses import LOSSES
from metadip.netconfig import NetConfig
from metadip.networks import build_network
from metadip.rules import RULES as UPDATE_RULES

__all__ = ["MetaInit", "member_record"]

FORMAT = "metadip-init/1"
RULES = tuple(UPDATE_RULES)  # the update rules an init may store
SCHEDULES = ("constant", "cosine")  # with_rates

# The original DIP recipe (Ulyanov et al.): Adam 0.01, input jitter 1/30, EMA 0.99.
VANILLA = {"lr": 0.01, "jitter": 1.0 / 30.0, "ema": 0.99, "steps": 1000}


@dataclass
class MetaInit:
    """An initialization and fitting rule.

    ``log_lr``: ``(steps, P)`` log learning rates per step and parameter tensor
    (P = len(weights), in ``weights`` order); ``rule``: ``"sgd"`` (momentum SGD,
    the meta-learned rule) or ``"adam"`` (vanilla DIP). ``jitter`` is the std of
    the input noise added each step, ``ema`` the output averaging factor (0 = off).
    ``loss``: what the steps minimize, ``"mse"`` (the data fit) or ``"sure"``
    (denoising only, image-input networks: see ``metadip.inner.sure_term``).
    ``ensemble``: the final image is the average over this many flips and rotations of
    the network's input (1, 2, 4 or 8; ``metadip.dihedral``): image-input networks only.
    """

    config: NetConfig
    weights: dict[str, Tensor]
    log_lr: Tensor
    momentum: Tensor
    tv_weight: Tensor
    fourier_basis: Tensor
    fourier_scale: Tensor
    z_seed: int = 0
    rule: str = "sgd"
    jitter: float = 0.0
    ema: float = 0.0
    loss: str = "mse"
    metadata: dict[str, Any] = field(default_factory=dict)
    ensemble: int = 1

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {self.rule!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.loss == "sure" and not self.config.guided:
            raise ValueError(
                "loss 'sure' needs a network whose output depends on y (input='image'); "
                "a noise-input DIP gives SURE a zero divergence"
            )
        if check_ensemble(self.ensemble) > 1 and not self.config.guided:
            raise ValueError(
                f"ensemble={self.ensemble} averages flips and rotations of the network's "
                "input image; this init's network reads fixed noise (input='noise'), so "
                "only ensemble=1 applies"
            )
        if self.ensemble > 1 and self.ema > 0:
            raise ValueError(
                f"ensemble={self.ensemble} and ema={self.ema}: an output average over the "
                "steps cannot be re-run on flipped inputs; use one of them"
            )
        if self.log_lr.dim() != 2 or self.log_lr.shape[1] != len(self.weights):
            raise ValueError(
                f"log_lr must be (steps, {len(self.weights)}) for {len(self.weights)} parameter "
                f"tensors, got {tuple(self.log_lr.shape)}"
            )
        if self.fourier_basis.shape != (self.config.num_fourier, 2):
            raise ValueError(
                f"fourier_basis must be ({self.config.num_fourier}, 2), got "
                f"{tuple(self.fourier_basis.shape)}"
            )

    @property
    def steps(self) -> int:
        """The horizon the learning rates were made for."""
        return int(self.log_lr.shape[0])

    @property
    def dtype(self) -> torch.dtype:
        return self.log_lr.dtype

    @property
    def device(self) -> torch.device:
        return self.log_lr.device

    def fourier_b(self) -> Tensor:
        """Fourier frequencies ``(k, 2)`` = scale · basis."""
        return self.fourier_scale * self.fourier_basis

    @classmethod
    def random(
        cls,
        channels: int,
        width: int = 128,
        depth: int = 5,
        steps: int = 50,
        seed: int = 0,
        *,
        rule: str = "sgd",
        lr: float | None = None,
        momentum: float = 0.9,
        tv_weight: float = 0.0,
        num_fourier: int = 16,
        fourier_scale: float = 2.0,
        kind: str = "skip",
        dtype: torch.dtype = torch.float32,
        network: dict[str, Any] | None = None,
    ) -> MetaInit:
        """A fresh, untrained initialization (torch's default init, seeded).

        ``rule="adam"`` with the defaults is vanilla DIP (lr 0.01, jitter 1/30, EMA 0.99);
        with ``kind="decoder"`` it is the vanilla Deep Decoder (no jitter, no EMA).
        ``network``: further ``NetConfig`` fields, e.g. ``{"input": "image"}``.
        """
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        config = NetConfig(
            kind=kind,
            out_channels=channels,
            width=width,
            depth=depth,
            num_fourier=num_fourier,
            **(network or {}),
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = build_network(config)
            basis = torch.randn(num_fourier, 2)
        weights = {k: v.detach().to(dtype) for k, v in net.named_parameters()}
        if lr is None:
            lr = VANILLA["lr"] if rule == "adam" else 0.05
        vanilla = rule == "adam"
        smoothed = vanilla and kind != "decoder"
        return cls(
            config=config,
            weights=weights,
            log_lr=torch.full((steps, len(weights)), math.log(lr), dtype=dtype),
            momentum=torch.tensor(momentum if not vanilla else 0.9, dtype=dtype),
            tv_weight=torch.tensor(tv_weight, dtype=dtype),
            fourier_basis=basis.to(dtype),
            fourier_scale=torch.tensor(fourier_scale, dtype=dtype),
            z_seed=seed,
            rule=rule,
            jitter=VANILLA["jitter"] if smoothed else 0.0,
            ema=VANILLA["ema"] if smoothed else 0.0,
            metadata={"source": "random", "seed": seed},
        )

    def tensors(self) -> dict[str, Tensor]:
        """Every tensor, keyed as in the file."""
        out = {f"weights.{k}": v for k, v in self.weights.items()}
        out.update(
            log_lr=self.log_lr,
            momentum=self.momentum,
            tv_weight=self.tv_weight,
            fourier_basis=self.fourier_basis,
            fourier_scale=self.fourier_scale,
        )
        return out

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> MetaInit:
        """A copy with every tensor moved and/or cast."""

        def mv(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype)

        return replace(
            self,
            weights={k: mv(v) for k, v in self.weights.items()},
            log_lr=mv(self.log_lr),
            momentum=mv(self.momentum),
            tv_weight=mv(self.tv_weight),
            fourier_basis=mv(self.fourier_basis),
            fourier_scale=mv(self.fourier_scale),
        )

    def with_steps(self, steps: int) -> MetaInit:
        """The same init for another horizon: extra steps reuse the last step's rates."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if steps <= self.steps:
            log_lr = self.log_lr[:steps]
        else:
            extra = self.log_lr[-1:].expand(steps - self.steps, -1)
            log_lr = torch.cat([self.log_lr, extra])
        return replace(self, log_lr=log_lr.clone())

    def with_rates(
        self, lr: float, schedule: str = "constant", steps: int | None = None, warmup: int = 0
    ) -> MetaInit:
        """The same init with every parameter's rate set by a schedule over ``steps`` rows
        (default: the init's horizon; later steps reuse the last row):
        ``"constant"``: ``lr_t = lr``; ``"cosine"``: ``lr_t = lr · (1 + cos(π t / T)) / 2``,
        which bounds the total step Σ lr_t ≈ lr·T/2, so fits longer than T barely move.
        ``warmup = W > 0`` multiplies the first W rows by ``(t + 1) / W``: Adam's first
        steps move every weight by about ``lr`` whatever its gradient's size, and on an
        image the init already fits well that transient costs more than it gains."""
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a positive finite number, got {lr}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        steps = self.steps if steps is None else steps
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if not 0 <= warmup <= steps:
            raise ValueError(f"warmup must be between 0 and steps={steps}, got {warmup}")
        t = torch.arange(steps, dtype=torch.float64)
        rates = torch.full_like(t, lr)
        if schedule == "cosine":
            rates = lr * (1 + torch.cos(math.pi * t / steps)) / 2
        if warmup:
            rates = rates * torch.clamp((t + 1) / warmup, max=1.0)
        log_lr = rates.log().unsqueeze(1).expand(steps, self.log_lr.shape[1])
        return replace(self, log_lr=log_lr.to(self.log_lr).clone())

    def scaled_rates(self, factor: float) -> MetaInit:
        """The same init with every learned rate multiplied by ``factor`` (> 0): the
        schedule's shape kept, its size changed."""
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"factor must be a positive finite number, got {factor}")
        return replace(self, log_lr=self.log_lr + math.log(factor))

    def averaged_with(self, *others: MetaInit) -> MetaInit:
        """This init with its network weights replaced by the uniform average over it and
        ``others`` (a "model soup": ``w = (w_0 + … + w_k) / (k + 1)``, per tensor). Meant
        for sibling runs continued from one starting point, whose weights stay in one basin;
        everything but the weights (rates, rule, loss, ensemble, metadata) is this init's."""
        if not others:
            raise ValueError("averaged_with needs at least one other init")
        for i, other in enumerate(others):
            if other.config != self.config:
                raise ValueError(f"init {i + 1} has network {other.config}, expected {self.config}")
        weights = {}
        for name, w in self.weights.items():
            acc = w.detach().to(torch.float64)
            for other in others:
                acc = acc + other.weights[name].detach().to(device=w.device, dtype=torch.float64)
            weights[name] = (acc / (len(others) + 1)).to(w.dtype)
        return replace(self, weights=weights)

    def save(self, path: str | Path) -> Path:
        """Writes safetensors + JSON header (config, rule, metadata) to ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {
            "format": FORMAT,
            "config": json.dumps(self.config.to_dict()),
            "rule": self.rule,
            "loss": self.loss,
            "z_seed": str(self.z_seed),
            "jitter": repr(self.jitter),
            "ema": repr(self.ema),
            "ensemble": str(self.ensemble),
            "metadata": json.dumps(self.metadata),
        }
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.tensors().items()}
        tmp = path.with_name(path.name + ".tmp")
        # Written through open() so the file gets the user's umask (safetensors' own
        # save_file creates it readable by the owner only).
        tmp.write_bytes(save(tensors, metadata=header))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, device: Any = None) -> MetaInit:
        """Reads a file written by ``save``; a corrupt or mismatched file raises ValueError."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no init file at {path}")
        try:
            tensors = load_file(str(path), device="cpu")
            with open(path, "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(n)).get("__metadata__") or {}
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"{path} is not a readable safetensors init file: {e}") from e
        if header.get("format") != FORMAT:
            raise ValueError(
                f"{path} is not a metadip init "
                f"(format {header.get('format')!r}, expected {FORMAT!r})"
            )
        try:
            config = NetConfig.from_dict(json.loads(header["config"]))
            meta = json.loads(header.get("metadata", "{}"))
            kw = {
                "rule": header["rule"],
                "loss": header.get("loss", "mse"),
                "z_seed": int(header["z_seed"]),
                "jitter": float(header["jitter"]),
                "ema": float(header["ema"]),
                "ensemble": int(header.get("ensemble", "1")),
            }
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"{path}: malformed metadip header ({e})") from e
        # On the meta device: shapes only, no memory, and the caller's RNG is not consumed.
        with torch.device("meta"):
            shapes = build_network(config).named_parameters()
        expected = {k: tuple(p.shape) for k, p in shapes}
        weights = {k[len("weights.") :]: v for k, v in tensors.items() if k.startswith("weights.")}
        got = {k: tuple(v.shape) for k, v in weights.items()}
        if got != expected:
            missing = sorted(set(expected) - set(got))
            extra = sorted(set(got) - set(expected))
            wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
            raise ValueError(
                f"{path}: weights do not match the network config {config}: missing {missing[:5]}, "
                f"unexpected {extra[:5]}, wrong shape {wrong[:5]}"
            )
        # Keep the network's parameter order: learning-rate columns follow it.
        weights = {k: weights[k] for k in expected}
        try:
            init = cls(
                config=config,
                weights=weights,
                log_lr=tensors["log_lr"],
                momentum=tensors["momentum"],
                tv_weight=tensors["tv_weight"],
                fourier_basis=tensors["fourier_basis"],
                fourier_scale=tensors["fourier_scale"],
                metadata=meta,
                **kw,
            )
        except KeyError as e:
            raise ValueError(f"{path}: missing tensor {e}") from e
        return init.to(device) if device is not None else init


def member_record(path: str | Path, init: MetaInit, label: str | None = None) -> dict[str, Any]:
    """How an averaged init names one of its members (``metadip average``, the shipping
    script): the file (``label``, else ``path`` as given), its sha256, the training step
    and the run directory it came from (``None`` where the file does not say)."""
    md = init.metadata
    return {
        "file": label if label is not None else str(path),
        "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
        "outer_step": md.get("outer_step", md.get("outer_steps")),
        "run": (md.get("train_config") or {}).get("out"),
    }
