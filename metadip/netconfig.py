"""The network configuration every init stores (``NetConfig``) and its vocabularies:
which network (``KINDS``), its input (``INPUTS``), normalization (``NORMS``), classical
solver after it (``SOLVERS``) and guide image (``GUIDES``). Depends on nothing else of
metadip, so configs, guides and solvers need not import the networks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["GUIDES", "INPUTS", "KINDS", "NORMS", "SOLVERS", "NetConfig"]

KINDS = ("skip", "siren", "decoder")
INPUTS = ("noise", "image")
NORMS = ("instance", "none")
SOLVERS = ("none", "gd", "red")  # metadip.classical.solvers
GUIDES = ("adjoint", "tv")  # metadip.guide


@dataclass(frozen=True)
class NetConfig:
    """Architecture and input of a DIP network (serialised in every init file).

    ``kind``: ``"skip"`` (DIP U-Net), ``"siren"`` (sine MLP on coordinates) or
    ``"decoder"`` (Deep Decoder: ``width`` channels, ``depth`` layers, its input
    ``width`` noise channels at ``1/2^(depth−1)`` of the image size; no Fourier features).
    The skip network's input is ``noise_channels`` of fixed noise plus
    ``2 * num_fourier`` Fourier features of the pixel coordinates; with
    ``input="image"`` (Educated DIP) it is led by an ``out_channels`` guide image:
    ``guide="adjoint"``, the operator's adjoint of the measurement (the noisy image for
    denoising), or ``guide="tv"``, the TV-regularized least-squares estimate
    ``argmin_{x∈[0,1]} ½‖Ax − y‖² + λ TV(x)``, ``λ = guide_weight · max(σ, 1/255)``, after
    ``guide_iters`` FISTA steps (``metadip.guide.tv_estimate``; a warm start for CS, PR
    and deblurring).
    ``residual``: the output is ``guide + head`` instead of ``sigmoid(head)``.
    ``noise_level``: the guide is followed by one constant channel holding the
    operator's noise std (a noise-level map, as in FFDNet).
    ``coverage``: then one channel holding ``Aᵀ A 1`` averaged over colour channels,
    which for inpainting is the observation mask (where the guide's zeros are missing
    pixels, not black ones).
    ``norm``: ``"instance"`` (per image and channel statistics) or ``"none"``.
    ``solver``: ``"none"``, or a classical solver the network's output starts
    (``metadip.classical``): ``"gd"`` (gradient descent on ‖A x − y‖²) or ``"red"``
    (RED with the shipped DnCNN), ``solver_iters`` steps of size ``solver_step / ‖AᵀA‖``,
    RED's denoiser weight ``solver_weight``.
    """

    kind: str = "skip"
    out_channels: int = 3
    width: int = 128
    depth: int = 5
    skip_channels: int = 4
    noise_channels: int = 32
    num_fourier: int = 16
    siren_w0: float = 30.0
    input: str = "noise"
    guide: str = "adjoint"
    guide_iters: int = 50
    guide_weight: float = 1.0
    residual: bool = False
    noise_level: bool = False
    coverage: bool = False
    norm: str = "instance"
    solver: str = "none"
    solver_iters: int = 0
    solver_step: float = 1.0
    solver_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"network kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "decoder" and self.num_fourier:
            raise ValueError("the deep decoder takes no Fourier features: set num_fourier=0")
        if self.input not in INPUTS:
            raise ValueError(f"network input must be one of {INPUTS}, got {self.input!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.guide not in GUIDES:
            raise ValueError(f"guide must be one of {GUIDES}, got {self.guide!r}")
        if self.guide != "adjoint" and self.input != "image":
            raise ValueError(f"guide={self.guide!r} is a guide image, so needs input='image'")
        if int(self.guide_iters) < 1 or not self.guide_weight >= 0:
            raise ValueError(
                "guide_iters must be >= 1 and guide_weight >= 0, got "
                f"{self.guide_iters} and {self.guide_weight}"
            )
        if self.input == "image" and self.kind != "skip":
            raise ValueError("input='image' (Educated DIP) needs the skip network")
        if (self.residual or self.noise_level or self.coverage) and self.input != "image":
            raise ValueError(
                "residual, noise_level and coverage belong to the guide, so need input='image'"
            )
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.solver != "none" and (int(self.solver_iters) < 1 or not self.solver_step > 0):
            raise ValueError(
                f"solver {self.solver!r} needs solver_iters >= 1 and solver_step > 0, got "
                f"{self.solver_iters} and {self.solver_step}"
            )
        if self.solver_weight < 0:
            raise ValueError(f"solver_weight must be >= 0, got {self.solver_weight}")
        for name in ("out_channels", "width", "depth"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("skip_channels", "noise_channels", "num_fourier"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if (
            self.kind == "skip"
            and self.input == "noise"
            and self.noise_channels + self.num_fourier == 0
        ):
            raise ValueError("the skip network needs noise_channels > 0 or num_fourier > 0")

    @property
    def guided(self) -> bool:
        """True when the network input starts with a guide image computed from y."""
        return self.input == "image"

    @property
    def guide_channels(self) -> int:
        """Channels of the guide part of the input: the image, plus the noise-level map
        and the coverage map when configured."""
        if not self.guided:
            return 0
        return self.out_channels + int(self.noise_level) + int(self.coverage)

    @property
    def in_channels(self) -> int:
        if self.kind == "siren":
            return 2 + 2 * self.num_fourier
        if self.kind == "decoder":
            return self.width
        return self.guide_channels + self.noise_channels + 2 * self.num_fourier

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown network config keys {sorted(unknown)}")
        return cls(**d)
