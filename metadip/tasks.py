"""Named imaging tasks -> operators, shared by the CLI, the demo and the evaluation."""

from __future__ import annotations

from collections.abc import Sequence

from metadip.operators import (
    Blur,
    CompressiveSensing,
    Denoise,
    Inpainting,
    Operator,
    PhaseRetrieval,
    SuperResolution,
)

TASKS = ("denoise", "cs", "pr", "inpaint", "blur", "sr")


def make_operator(
    task: str,
    shape: Sequence[int],
    *,
    sigma: float = 25 / 255,
    ratio: float = 0.25,
    seed: int = 0,
    factor: int = 2,
    storage: str = "dense",
) -> Operator:
    """The operator of ``task`` for images of ``shape`` ``(C, H, W)``.

    ``sigma`` is the noise std on the [0, 1] scale; ``ratio`` is m/n for cs/pr
    (one matrix per channel, so colour 128×128 stays affordable) and the observed
    fraction for inpainting; ``factor`` is the super-resolution factor; ``storage``
    ("dense" or "seeded") is how cs/pr keep their matrix.
    """
    if task == "denoise":
        return Denoise(shape, sigma)
    if task == "cs":
        return CompressiveSensing(shape, ratio, sigma, seed, channelwise=True, storage=storage)
    if task == "pr":
        return PhaseRetrieval(shape, ratio, sigma, seed, channelwise=True, storage=storage)
    if task == "inpaint":
        return Inpainting(shape, ratio=ratio, sigma=sigma, seed=seed)
    if task == "blur":
        return Blur(shape, kernel_size=9, kernel_sigma=2.0, sigma=sigma)
    if task == "sr":
        return SuperResolution(shape, factor, sigma)
    raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
