"""Posterior sampling with K chains per problem (Bayesian DIP, Cheng et al. 2019).

A fit's random streams (input jitter, SURE's probe, Langevin noise) come either from
one generator shared by the batch (``samples = 1``: item b equals a fit of b alone) or
from one generator per item (chains: item ``(b, k)`` equals a single-chain fit of b
seeded ``seed + k``).

Each chain runs the init's own rule plus stochastic-gradient Langevin dynamics:
``g ← g + λ θ`` (a Gaussian prior on the weights, weight decay ``λ``) and, after the
update ``Δθ``, ``θ ← θ + s · rms(Δθ) · ξ``, ``ξ ~ N(0, I)`` per parameter tensor.
Cheng et al. add ``N(0, (2·lr)²)`` to Adam's weights; Adam moves each weight by about
``lr`` per step, so scaling by the step's own size (``s = 2``) is their rule for Adam
and gives the same relative noise for the momentum-SGD rule of a meta-init.

Estimate: the chains' outputs ``f_θ(z)`` at each of the last ``L = max(1, T // 10)``
steps are the samples; ``image`` is their mean and ``std`` their standard deviation
(population, over all ``K·L`` samples), per pixel.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "LANGEVIN_SCALE",
    "PRIOR_DECAY",
    "SampleCollector",
    "chain_generators",
    "check_memory",
    "check_samples",
    "draw",
    "langevin_step",
    "pool_rows",
    "tail_length",
]

# s and λ of the module docstring (λ: Cheng et al.'s weight decay).
LANGEVIN_SCALE = 2.0
PRIOR_DECAY = 5e-8


def check_samples(samples: Any) -> int:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an integer >= 1 (chains per problem), got {samples!r}")
    return samples


def check_memory(init: Any, in_shape: Sequence[int], items: int) -> None:
    """Raises if fitting ``items`` networks of ``init`` at once on ``in_shape`` ``(C, H, W)``
    obviously cannot fit in the device's memory. The estimate is a lower bound: weights,
    gradient and two optimizer moments, and 16 feature maps of the network's width at
    full resolution per network (a skip network holds several per level)."""
    h, w = in_shape[-2:]
    per_item = 4 * sum(t.numel() for t in init.weights.values())
    per_item += 16 * init.config.width * h * w
    need = items * per_item * torch.finfo(init.dtype).bits // 8
    have = _memory(init.device)
    if have is not None and need > have:
        raise MemoryError(
            f"{items} chains of a width-{init.config.width} network at {h}x{w} need at least "
            f"{need / 2**30:.1f} GiB, more than the {have / 2**30:.1f} GiB of {init.device}; "
            "pass a smaller batch_size (problems per pass) or fewer samples"
        )


def _memory(device: torch.device) -> int | None:
    """Total memory of ``device`` in bytes, or None where unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[1]
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return None


def pool_rows(rows: list[list[Any]], k: int, merge: Callable[[list[Any]], Any]) -> list[Any]:
    """Per problem, ``merge`` of the rows of its ``k`` consecutive chains."""
    return [merge(rows[i : i + k]) for i in range(0, len(rows), k)]


def tail_length(steps: int) -> int:
    """L: how many of the last steps of each chain are samples."""
    return max(1, steps // 10)


def chain_generators(seeds: Sequence[int], device: torch.device) -> tuple[torch.Generator, ...]:
    """One generator per item, item i seeded ``seeds[i]``."""
    return tuple(torch.Generator(device=device).manual_seed(int(s)) for s in seeds)


def draw(
    generator: torch.Generator | None,
    generators: Sequence[torch.Generator] | None,
    shape: Sequence[int],
    like: Tensor,
) -> Tensor:
    """Standard normal noise of one item's ``shape``: ``(1, *shape)`` from the shared
    ``generator`` (or the global stream when None), or ``(B, *shape)`` with row i from
    ``generators[i]``; on ``like``'s device and dtype."""
    if generators:
        rows = [_randn(g, shape, like) for g in generators]
        return torch.stack(rows).to(like.device)
    return _randn(generator, shape, like)[None].to(like.device)


def _randn(g: torch.Generator | None, shape: Sequence[int], like: Tensor) -> Tensor:
    dev = g.device if g is not None else like.device
    return torch.randn(tuple(shape), generator=g, dtype=like.dtype, device=dev)


def langevin_step(
    new: Tensor, old: Tensor, scale: float, generators: Sequence[torch.Generator], groups: int
) -> Tensor:
    """``new + scale · rms(new − old) · ξ`` per item: parameters stacked ``(B, *shape)``
    for ``groups = B`` (the RMS and ξ per item), else one network's (B = 1)."""
    delta = (new - old).detach()
    if groups == 1:
        rms = delta.pow(2).mean().sqrt()
        return new + scale * rms * draw(None, generators, new.shape, new)[0]
    rms = delta.pow(2).flatten(1).mean(dim=1).sqrt().view(-1, *([1] * (new.dim() - 1)))
    return new + scale * rms * draw(None, generators, new.shape[1:], new)


class SampleCollector:
    """A fit callback (wrapping the caller's) that keeps the chains' images of the last
    ``L`` of ``steps`` steps of a fit of ``(B·samples)`` items (problem b's chains are
    items ``b·samples … b·samples + samples − 1``); ``reduce`` gives the per-problem mean
    and std ``(B, C, H, W)``."""

    def __init__(self, steps: int, samples: int, callback: Callable[[Any], Any] | None = None):
        self.first = steps - tail_length(steps)
        self.samples = samples
        self.callback = callback
        self.shift: Tensor | None = None
        self.total: Tensor | None = None
        self.square: Tensor | None = None
        self.count = 0

    def __call__(self, info: Any) -> Any:
        out = self.callback(info) if self.callback is not None else None
        if info.step >= self.first:
            self._add(info.image().detach())
        return out

    def _add(self, image: Tensor) -> None:
        # Moments in float64 about each problem's first sample (chain 0's): stable, and
        # exactly zero spread when every sample is the same.
        image = image.to(torch.float64).unflatten(0, (-1, self.samples))
        if self.shift is None:
            self.shift = image[:, :1].clone()
            self.total, self.square = torch.zeros_like(image), torch.zeros_like(image)
        d = image - self.shift
        self.total += d
        self.square += d * d
        self.count += 1

    def reduce(self, fallback: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and std over chains and tail steps; ``fallback`` ``(B·K, C, H, W)`` (the
        fit's images) stands in if no step was recorded (every step rejected)."""
        if self.shift is None:
            self._add(fallback)
        assert self.shift is not None and self.total is not None and self.square is not None
        n = self.count * self.samples
        mean = self.total.sum(dim=1) / n
        var = (self.square.sum(dim=1) / n - mean * mean).clamp_min(0)
        mean = mean + self.shift[:, 0]
        return mean.to(fallback.dtype), var.sqrt().to(fallback.dtype)

    def pooled(self, res: Any) -> tuple[Any, Tensor]:
        """A chain fit's ``FitResult`` per problem (the chains' mean image, mean loss and
        PSNR per step, every restore step) and the per-pixel std."""
        k = self.samples
        mean, std = self.reduce(res.image)
        mean_rows = lambda rows: [sum(c) / k for c in zip(*rows, strict=True)]  # noqa: E731
        return replace(
            res,
            image=mean,
            losses=pool_rows(res.losses, k, mean_rows),
            restored=pool_rows(res.restored, k, lambda rows: sorted(set().union(*rows))),
            psnr=None if res.psnr is None else pool_rows(res.psnr, k, mean_rows),
        ), std
