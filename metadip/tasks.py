"""The one task vocabulary: task names, their operators, and the ``name:value`` specs
of the evaluation (``denoise:25``, ``cs:0.25``, ``inpaint``), shared by the CLI, the
demo, training and the evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from metadip.operators import (
    Blur,
    CompressiveSensing,
    Denoise,
    Inpainting,
    Operator,
    PhaseRetrieval,
    SuperResolution,
)

__all__ = [
    "DEFAULT_TASKS",
    "TASKS",
    "TRAIN_SR_FACTORS",
    "TRAIN_TASKS",
    "TaskSpec",
    "check_mixture",
    "make_operator",
    "parse_assignments",
    "parse_mixture",
    "parse_task",
]

TASKS = ("denoise", "cs", "pr", "inpaint", "blur", "sr")
# What meta-training and Educated-DIP pretraining can sample.
TRAIN_TASKS = ("denoise", "cs", "pr", "inpaint", "blur", "sr")
TRAIN_SR_FACTORS = (2, 4)  # super-resolution factors training draws from, uniformly
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
MEASUREMENT_SIGMA = 25.0  # σ of cs / pr / inpaint / blur, on the 0-255 scale (the paper's)
INPAINT_RATIO = 0.5  # observed fraction for the extra inpainting row
SR_FACTOR = 2  # super-resolution factor of a bare ``sr`` (the CLI's default)


def make_operator(
    task: str,
    shape: Sequence[int],
    *,
    sigma: float = 25 / 255,
    ratio: float = 0.25,
    seed: int = 0,
    factor: int = 2,
    storage: str = "dense",
    box: str | tuple[int, int, int, int] | None = None,
) -> Operator:
    """The operator of ``task`` for images of ``shape`` ``(C, H, W)``.

    ``sigma`` is the noise std on the [0, 1] scale; ``ratio`` is m/n for cs/pr
    (one matrix per channel, so colour 128×128 stays affordable) and the observed
    fraction for inpainting; ``factor`` is the super-resolution factor; ``storage``
    ("dense" or "seeded") is how cs/pr keep their matrix; ``box`` (inpainting) is a
    missing rectangle, ``"center"`` or ``(top, left, height, width)``, instead of
    missing random pixels.
    """
    if task == "denoise":
        return Denoise(shape, sigma)
    if task == "cs":
        return CompressiveSensing(shape, ratio, sigma, seed, channelwise=True, storage=storage)
    if task == "pr":
        return PhaseRetrieval(shape, ratio, sigma, seed, channelwise=True, storage=storage)
    if task == "inpaint":
        if box is not None:
            return Inpainting(shape, box=box, sigma=sigma, seed=seed)
        return Inpainting(shape, ratio=ratio, sigma=sigma, seed=seed)
    if task == "blur":
        return Blur(shape, kernel_size=9, kernel_sigma=2.0, sigma=sigma)
    if task == "sr":
        return SuperResolution(shape, factor, sigma)
    raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")


@dataclass(frozen=True)
class TaskSpec:
    """A task as written on the command line: ``denoise:15``, ``cs:0.25``, ``inpaint`` ...

    ``sigma`` is on the 0-255 scale; ``ratio`` is m/n (cs, pr) or the observed
    fraction (inpaint); ``box``: ``inpaint:box`` misses the centre ninth of the image
    (a block, the hard case for a prior) instead of random pixels; ``factor`` is the
    super-resolution factor (``sr:4``).
    """

    spec: str
    task: str
    sigma: float
    ratio: float
    box: str | None = None
    factor: int = SR_FACTOR

    @property
    def family(self) -> str:
        return self.task

    def operator(self, shape: Sequence[int], seed: int) -> Operator:
        return make_operator(
            self.task,
            tuple(shape),
            sigma=self.sigma / 255,
            ratio=self.ratio,
            seed=seed,
            factor=self.factor,
            box=self.box,
        )


def parse_task(spec: str) -> TaskSpec:
    """``denoise:SIGMA``, ``cs:RATIO``, ``pr:RATIO``, ``inpaint[:RATIO]``, ``inpaint:box``,
    ``blur``, ``sr[:FACTOR]`` (σ = 25 on the low-resolution image for all but denoising)."""
    name, _, arg = spec.partition(":")
    if name == "inpaint" and arg == "box":
        return TaskSpec(spec, name, MEASUREMENT_SIGMA, 1 - (1 / 3) ** 2, box="center")
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
    if name == "sr":
        factor = SR_FACTOR if value is None else value
        if factor != int(factor) or factor < 2:
            raise ValueError(f"task {spec!r}: write sr:FACTOR with an integer FACTOR >= 2")
        return TaskSpec(spec, name, MEASUREMENT_SIGMA, 1.0, factor=int(factor))
    raise ValueError(
        f"unknown task {spec!r}; expected one of denoise:SIGMA, cs:RATIO, pr:RATIO, "
        "inpaint[:RATIO], inpaint:box, blur, sr[:FACTOR] (e.g. " + ", ".join(DEFAULT_TASKS) + ")"
    )


def check_mixture(tasks: dict[str, float]) -> None:
    """Raises unless ``tasks`` maps training task names (``TRAIN_TASKS``) to sampling
    probabilities >= 0, not all 0."""
    if not isinstance(tasks, dict) or not tasks:
        raise ValueError(f"tasks must name at least one of {TRAIN_TASKS}, got {tasks!r}")
    unknown = set(tasks) - set(TRAIN_TASKS)
    if unknown:
        raise ValueError(f"unknown training task(s) {sorted(unknown)}; choose from {TRAIN_TASKS}")
    if any(not p >= 0 for p in tasks.values()) or sum(tasks.values()) <= 0:
        raise ValueError(f"task probabilities must be >= 0 and not all 0, got {tasks}")


def parse_assignments(
    text: str, what: str, value: str, default: float | None = None
) -> dict[str, float]:
    """``"a=1,b=0.5"`` -> ``{"a": 1.0, "b": 0.5}`` (a command-line flag's table); a bare
    ``NAME`` takes ``default``, and is an error without one. ``what`` and ``value`` name
    the option and its values in the error."""
    form = f"NAME={value}" if default is None else f"NAME or NAME={value}"
    out: dict[str, float] = {}
    for part in filter(None, (s.strip() for s in text.split(","))):
        name, eq, v = part.partition("=")
        if not eq and default is None:
            raise ValueError(f"{what}: {part!r} is not {form}")
        try:
            out[name.strip()] = float(v) if eq else default
        except ValueError:
            raise ValueError(f"{what}: {part!r} is not {form}") from None
    return out


def parse_mixture(tasks: Any) -> dict[str, float]:
    """A training mixture from ``"denoise"``, ``"denoise=1,cs=0.5"``, a list of names or a
    dict, as ``{name: probability}`` (checked by ``check_mixture``)."""
    if isinstance(tasks, str):
        tasks = parse_assignments(tasks, "tasks", "PROBABILITY", default=1.0)
    elif isinstance(tasks, (list, tuple)):
        tasks = {str(t): 1.0 for t in tasks}
    if isinstance(tasks, dict):
        tasks = {k: float(v) for k, v in tasks.items()}
    check_mixture(tasks)
    return tasks
