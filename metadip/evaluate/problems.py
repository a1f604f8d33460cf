"""The evaluated problems: fixed ground truths (validation patches, or every image of a
user's folder) and one seeded measurement per (patch, task), the same for every method."""

from __future__ import annotations

import contextlib
import zlib
from pathlib import Path

import torch
from torch import Tensor

from metadip import baselines
from metadip.operators import Operator

__all__ = ["SPLITS", "cell_seed", "default_split", "input_view", "load_patches"]


def cell_seed(patch: str, spec: str) -> int:
    """The seed of the operator and noise of (patch, task): the same for every method."""
    return zlib.crc32(f"{patch}|{spec}".encode()) & 0x7FFFFFFF


# "val" / "train": the held-out / training files of the project's split (10 %, seed 0,
# as in meta-training); "all": every image of the folder, no split (a user's own images).
SPLITS = ("val", "train", "all")


def default_split(images: str | Path) -> str:
    """``"val"`` for the project's image sets (``natural``, ``skimage``, ``auto`` or the
    natural-train folder itself), ``"all"`` for any other folder."""
    from metadip import data

    project = {"auto", "natural", "skimage"}
    if str(images) in project:
        return "val"
    with contextlib.suppress(FileNotFoundError):
        if Path(images).resolve() == Path(data.resolve_source("natural")):
            return "val"
    return "all"


def load_patches(
    images: str | Path, n: int | None, size: int, seed: int = 0, split: str = "val"
) -> list[tuple[str, Tensor]]:
    """Fixed ``(3, size, size)`` problems' ground truths, named.

    ``split="val"`` / ``"train"``: ``n`` seeded, unaugmented crops (named ``val00`` ...)
    from the validation / training files of ``images`` (a folder, ``"natural"`` or
    ``"skimage"``; see ``metadip.data``), split by file as in meta-training, so
    validation patches were never trained on. ``split="all"``: every image of the
    folder (the first ``n`` by name when ``n`` is given), each centre-cropped to
    ``size``, named by its file.
    """
    from metadip import data

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n is not None and n < 1:
        raise ValueError(f"need at least one patch, got {n}")
    if split == "all":
        return _centre_crops(data.read_images(images, channels=3), n, size)
    train, val = data.load_images(images, channels=3, val_fraction=0.1, seed=0)
    pool = val if split == "val" else train
    sampler = data.PatchSampler(pool, size=size, augment=False)
    offset = 0 if split == "val" else 7919  # tuning crops come from another stream too
    patches = sampler.sample(n or 6, torch.Generator().manual_seed(seed + offset))
    return [(f"{split}{i:02d}", p) for i, p in enumerate(patches)]


def _centre_crops(images: dict, n: int | None, size: int) -> list[tuple[str, Tensor]]:
    names = sorted(images)[:n]
    if not names:
        raise ValueError("the image folder holds no image")
    out = []
    for name in names:
        a = images[name]
        h, w = a.shape[1:]
        if min(h, w) < size:
            raise ValueError(
                f"{name} is {h}x{w}, smaller than --size {size}; pass a smaller --size"
            )
        top, left = (h - size) // 2, (w - size) // 2
        crop = torch.from_numpy(a[:, top : top + size, left : left + size].copy()).float() / 255
        out.append((Path(name).stem, crop))
    return out


def input_view(op: Operator, y: Tensor) -> Tensor:
    """What the method starts from, as an image: y itself, the back-projection Aᵀy, or
    (phase retrieval) the constant image whose energy matches |y|."""
    return baselines.start_point(y[None], op)[0].clamp(0, 1)
