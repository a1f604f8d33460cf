"""Quality floor of the shipped defaults on a bundled image: a regressed default fails CI.

Denoising σ = 25 on the 128×128 astronaut patch (the demo's); CS at m/n = 1/4 (a 128²
dense matrix is 0.8 GB), phase retrieval at m/n = 1/4 (one matrix per channel),
deblurring (9×9 Gaussian, width 2), 2× super-resolution and a user's own linear operator,
σ = 25, on its 64×64 version; 50 steps, seed 0. The
margins sit well under what the shipped files measure (recorded in
benchmarks/results/recipe_study/README.md) and well over what a broken init gives.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from metadip import io
from metadip.api import reconstruct
from metadip.guide import tv_estimate
from metadip.init import MetaInit
from metadip.metrics import psnr
from metadip.operators import (
    Blur,
    CompressiveSensing,
    Denoise,
    LinearOperator,
    PhaseRetrieval,
    SuperResolution,
)
from metadip.shipped import load_init
from metadip.tasks import make_operator

# dB over the noisy input, and over the best hand-tuned vanilla DIP(50) on the width-32
# network of the general default (Adam 0.002, no EMA: the best 50-step schedule on the
# tuning patches).
OVER_NOISY = 7.0
OVER_VANILLA = 3.0


@pytest.fixture(scope="module")
def problem():
    x = io.bundled_patch("astronaut", 128)
    op = Denoise(x.shape, 25 / 255)
    return x, op, op.measure(x, torch.Generator().manual_seed(0))


def _vanilla(steps: int) -> MetaInit:
    init = MetaInit.random(3, width=32, depth=4, steps=steps, rule="adam", seed=0)
    return replace(init, log_lr=torch.full_like(init.log_lr, math.log(0.002)), ema=0.0)


@pytest.mark.slow
def test_shipped_denoising_default_beats_the_noise_and_tuned_vanilla_dip(problem):
    x, op, y = problem
    init = load_init("default", 3, task="denoise")
    assert init.config.guided and init.loss == "sure" and init.steps == 20
    rec = reconstruct(y, op, seed=0)
    assert rec.steps == 20
    noisy = psnr(y.clamp(0, 1), x)
    ours = psnr(rec.image.clamp(0, 1), x)
    vanilla = psnr(reconstruct(y, op, init=_vanilla(50), seed=0).image.clamp(0, 1), x)
    assert ours >= noisy + OVER_NOISY, (ours, noisy)
    assert ours >= vanilla + OVER_VANILLA, (ours, vanilla)


@pytest.mark.slow
def test_shipped_denoising_default_does_not_collapse_with_more_steps(problem):
    x, op, y = problem
    at = {n: psnr(reconstruct(y, op, steps=n, seed=0).image.clamp(0, 1), x) for n in (50, 100)}
    assert at[100] >= at[50] - 0.2, at


@pytest.mark.slow
def test_shipped_denoising_default_serves_gray_images(problem):
    x, _, _ = problem
    gray = x.mean(dim=0, keepdim=True)
    op = Denoise(gray.shape, 25 / 255)
    y = op.measure(gray, torch.Generator().manual_seed(0))
    rec = reconstruct(y, op, seed=0)
    assert rec.image.shape == gray.shape
    assert psnr(rec.image.clamp(0, 1), gray) >= psnr(y.clamp(0, 1), gray) + OVER_NOISY


@pytest.mark.slow
@pytest.mark.parametrize(
    ("task", "weight"),
    # Measured: CS 26.64 dB (TV start 25.23, general default 23.80, Aᵀy 6.5); deblurring
    # 24.90 (TV start 24.12, general default 23.21, blurred input 17.19); phase retrieval
    # 27.22 (TV amplitude-flow start 25.97, general default 24.94).
    # Super-resolution (2×) 26.08 (TV start 24.23, general default 23.75); a user's 5×5
    # blur given as callables (the linear-operator default) 27.18 (TV start 25.85, general
    # default 24.37).
    [("cs", 1.0), ("blur", 0.3), ("pr", 0.3), ("sr", 0.3), ("linear", 0.5)],
)
def test_shipped_tv_started_default_refines_its_start_and_beats_the_general_one(task, weight):
    x = io.bundled_patch("astronaut", 64)
    if task == "cs":
        op = CompressiveSensing(x.shape, 0.25, 25 / 255, seed=0)
    elif task == "pr":
        op = PhaseRetrieval(x.shape, 0.25, 25 / 255, seed=0, channelwise=True)
    elif task == "sr":
        op = SuperResolution(x.shape, 2, 25 / 255)
    elif task == "linear":
        mild = Blur(x.shape, kernel_size=5, kernel_sigma=1.0)
        op = LinearOperator.from_callables(
            mild.forward, mild.adjoint, x.shape, x.shape, sigma=25 / 255
        )
    else:
        op = Blur(x.shape, kernel_size=9, kernel_sigma=2.0, sigma=25 / 255)
    y = op.measure(x, torch.Generator().manual_seed(0))
    rec = reconstruct(y, op, seed=0)
    assert rec.init == f"default ({task}.safetensors)"
    ours = psnr(rec.image.clamp(0, 1), x)
    start = psnr(tv_estimate(op, y[None], weight=weight)[0], x)
    general = load_init("default")  # the MetaDIP init these tasks used before
    maml = psnr(reconstruct(y, op, init=general, seed=0).image.clamp(0, 1), x)
    assert ours >= start + 0.2, (ours, start)
    assert ours >= maml + 1.0, (ours, maml)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["denoise", "inpaint"])
def test_shipped_self_ensemble_improves_the_image(task):
    # Measured (astronaut, the default's steps / 0 steps): denoising at 128² (20 steps)
    # 31.34 / 31.36 dB with the shipped 8-transform ensemble against 31.26 / 31.27 without;
    # inpainting half the pixels at 64² (50 steps) 25.87 / 26.06 against 25.69 / 25.88. A
    # wrong inverse transform loses several dB.
    size = 128 if task == "denoise" else 64
    x = io.bundled_patch("astronaut", size)
    op = make_operator(task, x.shape, sigma=25 / 255, ratio=0.5, seed=0)
    y = op.measure(x, torch.Generator().manual_seed(0))
    assert load_init("default", 3, task=task).ensemble == 8
    for steps in (0, None):
        ours = psnr(reconstruct(y, op, steps=steps, seed=0).image.clamp(0, 1), x)
        plain = reconstruct(y, op, steps=steps, seed=0, ensemble=1).image
        assert ours >= psnr(plain.clamp(0, 1), x) + 0.05, (steps, ours)


@pytest.mark.slow
def test_shipped_large_denoiser_matches_the_default_in_colour_and_gray():
    # Measured (64×64, both with their 8-transform ensembles, 50 steps against the
    # default's 20, one thread): colour 30.75 dB against the default's 30.65, gray 29.40
    # against 29.35 (noisy 20.4). On the validation list the default is now ahead at 50
    # steps (README), so the check is that the large file works at about the default's
    # level: one that does not load its weights right loses several dB.
    x = io.bundled_patch("astronaut", 64)
    for image in (x, x.mean(dim=0, keepdim=True)):
        op = Denoise(image.shape, 25 / 255)
        y = op.measure(image, torch.Generator().manual_seed(0))
        rec = reconstruct(y, op, init="large", seed=0)
        assert rec.steps == 50 and rec.init == "large (denoise_large.safetensors)"
        large = psnr(rec.image.clamp(0, 1), image)
        default = psnr(reconstruct(y, op, seed=0).image.clamp(0, 1), image)
        assert large >= psnr(y.clamp(0, 1), image) + OVER_NOISY, large
        assert large >= default - 0.3, (large, default)
