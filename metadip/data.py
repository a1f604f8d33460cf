"""Training data: image folders, a seeded train/validation split by file, patch sampling
and (x, operator, y) task sampling for meta-training.

Sources, in the order ``resolve_source`` tries them for ``"auto"``: a folder the
user names; ``../shared/data/natural-train`` (photographs with a MANIFEST.tsv,
relative to the repository); scikit-image's bundled photographs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from metadip.operators import Operator
from metadip.tasks import TRAIN_SR_FACTORS, check_mixture, make_operator

__all__ = [
    "IMAGE_SUFFIXES",
    "NATURAL_TRAIN",
    "SKIMAGE_PHOTOS",
    "VALIDATION_LIST",
    "PatchSampler",
    "TaskSampler",
    "list_images",
    "load_images",
    "read_image",
    "resolve_source",
    "split_files",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
# Relative to the repository root (the folder holding pyproject.toml).
NATURAL_TRAIN = "../shared/data/natural-train"
# A folder's fixed validation files, when it holds this list (see ``load_images``).
VALIDATION_LIST = "validation.txt"
# scikit-image's bundled photographs (natural content; the synthetic test images are left out).
SKIMAGE_PHOTOS = ("astronaut", "camera", "cat", "chelsea", "coffee", "hubble_deep_field", "rocket")
MATRIX_TASKS = ("cs", "pr")


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name (so splits are reproducible)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist or is not a directory")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(
            f"no images in {folder}: expected files ending in {', '.join(IMAGE_SUFFIXES)}"
        )
    return files


def resolve_source(source: str | Path = "auto") -> str | Path:
    """``"auto"`` -> natural-train if present, else ``"skimage"``; ``"natural"`` ->
    natural-train (relative to the repository, then to the working directory);
    ``"skimage"`` stays; anything else is a folder path that must exist."""
    if source in ("auto", "natural"):
        for base in (_repo_root(), Path.cwd()):
            cand = (base / NATURAL_TRAIN).resolve()
            if cand.is_dir():
                return cand
        if source == "natural":
            raise FileNotFoundError(
                f"natural-train not found at {NATURAL_TRAIN} relative to the repository or the "
                "working directory; pass a folder or 'skimage'"
            )
        return "skimage"
    if source == "skimage":
        return "skimage"
    path = Path(source)
    if not path.is_dir():
        raise FileNotFoundError(
            f"data source {source!r} is neither 'auto', 'natural', 'skimage' nor a folder"
        )
    return path


def split_files(
    names: Sequence[str], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[str], list[str]]:
    """A fixed train/validation split by file: sorted names, seeded permutation, the first
    ``max(1, round(val_fraction · n))`` go to validation (none when ``val_fraction == 0``)."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    names = sorted(names)
    if len(names) < 2 and val_fraction > 0:
        raise ValueError(f"a train/validation split needs at least 2 images, got {len(names)}")
    n_val = 0 if val_fraction == 0 else max(1, round(val_fraction * len(names)))
    order = np.random.default_rng(seed).permutation(len(names))
    val = sorted(names[i] for i in order[:n_val])
    train = sorted(names[i] for i in order[n_val:])
    return train, val


def _to_channels(a: np.ndarray, channels: int) -> np.ndarray:
    """``(H, W)`` or ``(H, W, C)`` uint8 -> ``(channels, H, W)`` uint8 (grey via BT.601)."""
    if a.ndim == 2:
        a = a[..., None]
    a = a[..., :3]
    if channels == 1 and a.shape[-1] == 3:
        grey = a.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        a = np.clip(np.rint(grey), 0, 255).astype(np.uint8)[..., None]
    elif channels == 3 and a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        if im.mode not in ("L", "RGB"):
            im = im.convert("RGB")
        a = np.asarray(im)
    if a.dtype != np.uint8:
        raise ValueError(f"{path}: expected an 8-bit image, got dtype {a.dtype}")
    return a


def load_images(
    source: str | Path = "auto", channels: int = 3, val_fraction: float = 0.1, seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Train and validation images ``name -> (channels, H, W)`` uint8, split by file: by
    ``split_files``, or, when the folder holds a ``validation.txt`` (one file name per
    line), those files are the validation split and the rest train (``val_fraction``
    and ``seed`` then unused): a subset of a folder packed with the validation files of
    the whole folder's split validates on the same files (``benchmarks/pack_gpu_data.py``)."""
    images = read_images(source, channels)
    listed = _validation_list(resolve_source(source))
    if listed is None:
        train, val = split_files(list(images), val_fraction, seed)
    else:
        missing = sorted(set(listed) - set(images))
        if missing:
            raise ValueError(
                f"{VALIDATION_LIST} names files the folder does not hold: {missing[:5]}"
            )
        val = sorted(listed)
        train = sorted(set(images) - set(listed))
        if not train:
            raise ValueError(f"{VALIDATION_LIST} lists every image: none is left to train on")
    return {n: images[n] for n in train}, {n: images[n] for n in val}


def _validation_list(src: str | Path) -> list[str] | None:
    """The names in ``src/validation.txt`` (blank lines skipped), or None without one."""
    if src == "skimage" or not (Path(src) / VALIDATION_LIST).is_file():
        return None
    names = (Path(src) / VALIDATION_LIST).read_text().split("\n")
    listed = [n.strip() for n in names if n.strip()]
    if not listed:
        raise ValueError(f"{Path(src) / VALIDATION_LIST} is empty: list at least one file")
    return listed


def read_images(source: str | Path = "auto", channels: int = 3) -> dict[str, np.ndarray]:
    """Every image of ``source`` (see ``resolve_source``), ``name -> (channels, H, W)``
    uint8, without any split."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    src = resolve_source(source)
    if src != "skimage":
        return {p.name: read_image(p, channels) for p in list_images(src)}
    import skimage.data

    return {n: _to_channels(getattr(skimage.data, n)(), channels) for n in SKIMAGE_PHOTOS}


def read_image(path: str | Path, channels: int = 3) -> np.ndarray:
    """One image file as training reads it: ``(channels, H, W)`` uint8 (modes other than
    L and RGB converted to RGB; gray from colour via BT.601, colour from gray repeated)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    return _to_channels(_read(Path(path)), channels)


@dataclass
class PatchSampler:
    """Random ``(C, size, size)`` crops in [0, 1] with flips and 90° rotations.

    A crop whose standard deviation is below ``min_std`` (near-flat sky, walls) is
    rejected and redrawn, up to ``max_tries`` times per patch.
    """

    images: dict[str, np.ndarray]
    size: int = 128
    augment: bool = True
    min_std: float = 0.03
    max_tries: int = 50

    def __post_init__(self) -> None:
        if not self.images:
            raise ValueError("PatchSampler needs at least one image, got none")
        if self.size < 1:
            raise ValueError(f"patch size must be >= 1, got {self.size}")
        small = [n for n, a in self.images.items() if min(a.shape[1:]) < self.size]
        if len(small) == len(self.images):
            raise ValueError(
                f"every image is smaller than the patch size {self.size} (e.g. {small[0]} is "
                f"{self.images[small[0]].shape[1]}x{self.images[small[0]].shape[2]})"
            )
        # Images too small for a crop are skipped; larger images are drawn more often
        # (proportional to the number of distinct crops) so every pixel is equally likely.
        self.names = [n for n in sorted(self.images) if n not in small]
        size = self.size
        areas = np.array(
            [
                (self.images[n].shape[1] - size + 1) * (self.images[n].shape[2] - size + 1)
                for n in self.names
            ],
            dtype=np.float64,
        )
        self._weights = torch.from_numpy(areas / areas.sum())

    def _crop(self, g: torch.Generator) -> np.ndarray:
        i = int(torch.multinomial(self._weights, 1, generator=g))
        a = self.images[self.names[i]]
        _, h, w = a.shape
        top = int(torch.randint(0, h - self.size + 1, (1,), generator=g))
        left = int(torch.randint(0, w - self.size + 1, (1,), generator=g))
        return a[:, top : top + self.size, left : left + self.size]

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """``(n, C, size, size)`` float32 patches in [0, 1]."""
        out = []
        for _ in range(n):
            for _ in range(self.max_tries):
                patch = torch.from_numpy(self._crop(generator).astype(np.float32) / 255.0)
                if float(patch.std()) >= self.min_std:
                    break
            if self.augment:
                k = int(torch.randint(0, 4, (1,), generator=generator))
                patch = torch.rot90(patch, k, dims=(1, 2))
                if int(torch.randint(0, 2, (1,), generator=generator)):
                    patch = patch.flip(2)
            out.append(patch.contiguous())
        return torch.stack(out)


@dataclass
class TaskSampler:
    """Builds meta-training tasks ``(x, op, y)`` from clean patches.

    ``tasks``: ``name -> probability`` over ``"denoise"``, ``"cs"``, ``"pr"``,
    ``"inpaint"``, ``"blur"`` (the evaluation's 9×9 Gaussian kernel of std 2), ``"sr"``
    (box downsampling by a factor drawn from ``TRAIN_SR_FACTORS``; the patch size must be
    a multiple of each);
    ``sigma``: noise std range on the 0-255 scale, drawn uniformly per task;
    ``ratio``: m/n range for cs / pr, the observed fraction for inpaint (a fresh
    random-pixel mask per task). Random operators get a seed drawn from the
    generator, so a task is reproducible from the generator state.
    """

    tasks: dict[str, float]
    sigma: tuple[float, float] = (25.0, 25.0)
    ratio: tuple[float, float] = (0.25, 0.25)

    def __post_init__(self) -> None:
        check_mixture(self.tasks)
        for name, (lo, hi) in (("sigma", self.sigma), ("ratio", self.ratio)):
            if not (0 <= lo <= hi and math.isfinite(hi)):
                raise ValueError(
                    f"{name} must be a range (lo, hi) with 0 <= lo <= hi, got {lo, hi}"
                )
        if self.ratio[0] <= 0:
            raise ValueError(f"ratio must be > 0, got {self.ratio}")

    def _uniform(self, lo: float, hi: float, g: torch.Generator) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))

    def make(
        self, x: Tensor, generator: torch.Generator, shared: dict | None = None
    ) -> tuple[Tensor, Operator, Tensor]:
        """One task for the clean image ``x`` ``(C, H, W)``. With a ``shared`` dict, a
        random-matrix operator (cs, pr) drawn for one shape is kept there and reused for
        later images of that task and shape (drawing the matrix costs more than a step)."""
        names = sorted(self.tasks)
        probs = torch.tensor([self.tasks[n] for n in names], dtype=torch.float64)
        name = names[int(torch.multinomial(probs, 1, generator=generator))]
        sigma = self._uniform(*self.sigma, generator) / 255.0
        ratio = self._uniform(*self.ratio, generator)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        factor = 2
        if name == "sr":  # drawn for sr only, so other mixtures keep their task stream
            factor = TRAIN_SR_FACTORS[
                int(torch.randint(0, len(TRAIN_SR_FACTORS), (1,), generator=generator))
            ]
        key = (name, tuple(x.shape))
        if shared is not None and name in MATRIX_TASKS and key in shared:
            op = shared[key]
        else:
            op = make_operator(
                name, tuple(x.shape), sigma=sigma, ratio=ratio, seed=seed, factor=factor
            )
            op = op.to(dtype=x.dtype)
            if shared is not None and name in MATRIX_TASKS:
                shared[key] = op
        y = op.measure(x, generator)
        return x, op, y

    def sample(self, patches: Tensor, generator: torch.Generator) -> list:
        """One task per patch of ``patches`` ``(B, C, H, W)``."""
        return [self.make(p, generator) for p in patches]
