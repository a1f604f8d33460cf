"""The shipped initializations and the names an ``init`` argument resolves.

``metadip/weights`` holds one file per kind of problem (an operator's ``task``), gray
variants for some, width-128 ones for ``init="large"``; ``load_init`` turns
``"default"``, ``"large"``, ``"random"`` (vanilla DIP), ``"decoder"`` (the Deep Decoder),
a path or a ``MetaInit`` into a ``MetaInit``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from metadip.init import VANILLA, MetaInit

__all__ = [
    "DEFAULT_INIT_NAME",
    "GRAY_DEFAULTS",
    "LARGE_DEFAULTS",
    "LINEAR_DEFAULT_NAME",
    "TASK_DEFAULTS",
    "default_init_path",
    "large_init_path",
    "load_init",
]

DEFAULT_INIT_NAME = "default.safetensors"
# Shipped inits made for one kind of problem (an operator's ``task``), in metadip/weights;
# every other task uses DEFAULT_INIT_NAME.
TASK_DEFAULTS: dict[str, str] = {
    "denoise": "denoise.safetensors",
    "inpaint": "inpaint.safetensors",
    "cs": "cs.safetensors",
    "blur": "blur.safetensors",
    "pr": "pr.safetensors",
    "sr": "sr.safetensors",
}
# Linear operators of every other task (a user's matrix, callables with an adjoint, a
# deepinv LinearPhysics) take this one: a denoiser reading the TV-regularized
# least-squares estimate, which needs only A and Aᵀ.
# Non-linear ones without a file of their own take DEFAULT_INIT_NAME.
LINEAR_DEFAULT_NAME = "linear.safetensors"
# Tasks whose 1-channel problems get a file of their own (the same network at a lower
# rate: on gray images the colour files' fits give back quality from 50 to 100 steps).
GRAY_DEFAULTS: dict[str, str] = {"cs": "cs_gray.safetensors", "pr": "pr_gray.safetensors"}
# ``init="large"``: a task's recipe at the paper's width 128 (depth 5), trained on a GPU.
# Level with the denoising default at 50 steps, at ~4.5x its CPU time: meant
# for a GPU.
LARGE_DEFAULTS: dict[str, str] = {"denoise": "denoise_large.safetensors"}
# init="decoder": Heckel & Hand's Deep Decoder (k = 64 channels, 6 layers; Adam 0.01, no
# input jitter, no output average).
DECODER = {"width": 64, "depth": 6}


def default_init_path(
    task: str | None = None, channels: int | None = None, linear: bool = False
) -> Path:
    """Where the shipped default initialization for an operator's ``task`` lives (it may
    not exist): for 1-channel problems its gray file when ``GRAY_DEFAULTS`` has one, else
    its own file when ``TASK_DEFAULTS`` has one, else for a ``linear`` operator the TV-start
    file ``LINEAR_DEFAULT_NAME``, else the general (MetaDIP) default."""
    other = LINEAR_DEFAULT_NAME if linear else DEFAULT_INIT_NAME
    name = TASK_DEFAULTS.get(task or "", other)
    if channels == 1:
        name = GRAY_DEFAULTS.get(task or "", name)
    return _weights(name)


def large_init_path(task: str | None) -> Path:
    """Where the shipped width-128 init for ``task`` lives (``LARGE_DEFAULTS``); a
    ``ValueError`` names the tasks that have one when ``task`` has none."""
    if task not in LARGE_DEFAULTS:
        raise ValueError(
            f"init='large' is shipped for task(s) {', '.join(sorted(LARGE_DEFAULTS))}; this "
            f"operator's task is {task!r}: use init='default'"
        )
    return _weights(LARGE_DEFAULTS[task])


def _weights(name: str) -> Path:
    return Path(str(resources.files("metadip") / "weights" / name))


def load_init(
    name_or_path: str | Path | MetaInit,
    channels: int | None = None,
    seed: int = 0,
    task: str | None = None,
    linear: bool = False,
) -> MetaInit:
    """Resolves ``"default"`` (the shipped init for ``task``, ``channels`` and a ``linear``
    operator, see ``default_init_path``), ``"large"`` (the width-128 one for ``task``, see
    ``large_init_path``),
    ``"random"`` (vanilla DIP with weights from ``seed``; needs ``channels``), ``"decoder"``
    (the vanilla Deep Decoder, likewise), a path or a MetaInit."""
    if isinstance(name_or_path, MetaInit):
        return name_or_path
    if name_or_path == "random":
        if channels is None:
            raise ValueError("init='random' needs the number of image channels")
        return MetaInit.random(channels, steps=VANILLA["steps"], seed=seed, rule="adam")
    if name_or_path == "decoder":
        if channels is None:
            raise ValueError("init='decoder' needs the number of image channels")
        return MetaInit.random(
            channels,
            steps=VANILLA["steps"],
            seed=seed,
            rule="adam",
            kind="decoder",
            num_fourier=0,
            **DECODER,
        )
    if name_or_path == "default":
        path = default_init_path(task, channels, linear)
        if not path.is_file():
            raise FileNotFoundError(
                "no trained default initialization is installed with this copy of metadip "
                f"(expected {path}). Pass init=PATH to a trained init file, or init='random' for "
                "vanilla DIP (1000 steps)."
            )
        return MetaInit.load(path)
    if name_or_path == "large":  # MetaInit.load names a missing file
        return MetaInit.load(large_init_path(task))
    if isinstance(name_or_path, (str, Path)):
        return MetaInit.load(name_or_path)
    raise TypeError(
        "init must be 'default', 'large', 'random', 'decoder', a file path or a MetaInit, "
        f"got {type(name_or_path)}"
    )
