"""The evaluated problems: fixed validation patches and one seeded measurement per
(patch, task), the same for every method."""

from __future__ import annotations

import zlib
from pathlib import Path

import torch
from torch import Tensor

from metadip import baselines
from metadip.operators import Operator

__all__ = ["cell_seed", "input_view", "load_patches"]


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
