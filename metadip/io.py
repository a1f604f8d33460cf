"""Reading and writing images: PNG/TIFF/JPEG through Pillow, raw arrays as .npy.

Images in memory are ``(C, H, W)`` float32 tensors in [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

__all__ = ["bundled_patch", "load_array", "load_image", "save_grid", "save_image", "std_view"]

BUNDLED = ("astronaut", "coffee", "chelsea", "rocket", "camera")
# Where a default 128×128 patch lands on something with texture (the face, for astronaut).
_FOCUS = {"astronaut": (60, 190)}


def _to_chw(a: np.ndarray, path: Path | str) -> Tensor:
    if a.ndim == 2:
        a = a[None]
    elif a.ndim == 3 and a.shape[-1] in (1, 3, 4) and a.shape[0] not in (1, 3):
        a = a.transpose(2, 0, 1)
    if a.ndim != 3:
        raise ValueError(f"{path}: expected a 2-D (H, W) or 3-D image, got shape {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(a))


def load_image(path: str | Path) -> Tensor:
    """An image file as ``(C, H, W)`` float32 in [0, 1] (alpha dropped; 8/16-bit scaled).

    ``.npy`` files are taken as they are (``(H, W)``, ``(C, H, W)`` or ``(H, W, C)``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    if path.suffix.lower() == ".npy":
        a = np.load(path)
        if a.dtype.kind not in "fiu":
            raise TypeError(f"{path}: expected a real numeric array, got dtype {a.dtype}")
        return _to_chw(a.astype(np.float32), path)
    with Image.open(path) as im:
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGB" if im.mode != "LA" else "L")
        a = np.asarray(im)
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16 or (a.dtype.kind == "i" and a.max() > 255):
        a = a.astype(np.float32) / 65535.0
    elif a.dtype.kind in "iu":
        a = a.astype(np.float32) / 255.0
    else:
        a = a.astype(np.float32)
    return _to_chw(a, path)


def load_array(path: str | Path) -> Tensor:
    """A measurement stored as ``.npy`` (any shape), as float32."""
    path = Path(path)
    if path.suffix.lower() != ".npy":
        raise ValueError(f"measurements of cs/pr must be a .npy array, got {path}")
    a = np.load(path)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{path}: expected a real numeric array, got dtype {a.dtype}")
    return torch.from_numpy(a.astype(np.float32))


def _to_uint8(x: Tensor) -> np.ndarray:
    a = x.detach().cpu().float().clamp(0, 1).numpy()
    a = (a * 255 + 0.5).astype(np.uint8)
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)


def save_image(path: str | Path, x: Tensor) -> Path:
    """Writes ``(C, H, W)`` in [0, 1]: 8-bit PNG/JPEG, float32 TIFF, or raw ``.npy``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        np.save(path, x.detach().cpu().numpy())
    elif suffix in (".tif", ".tiff") and x.shape[0] == 1:
        Image.fromarray(x[0].detach().cpu().float().numpy()).save(path)
    elif suffix in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"):
        Image.fromarray(_to_uint8(x)).save(path)
    else:
        raise ValueError(f"unsupported output format {suffix!r}: use .png, .tif, .jpg or .npy")
    return path


def std_view(std: Tensor) -> tuple[Tensor, float]:
    """A ``(C, H, W)`` std map for display: the ``(1, H, W)`` channel mean scaled so that
    its maximum is white; and that maximum (on the image's 0-1 scale)."""
    gray = std.detach().cpu().float().mean(dim=0, keepdim=True)
    top = float(gray.max())
    return gray / top if top > 0 else gray, top


def save_grid(path: str | Path, panels: list[tuple[str, Tensor]], pad: int = 4) -> Path:
    """Side-by-side PNG of labelled ``(C, H, W)`` panels (gray panels shown as RGB)."""
    from PIL import ImageDraw

    tiles = []
    for _, x in panels:
        x = x.detach().cpu().float()
        tiles.append(x.expand(3, -1, -1) if x.shape[0] == 1 else x[:3])
    h = max(t.shape[1] for t in tiles)
    label_h = 14
    w = sum(t.shape[2] for t in tiles) + pad * (len(tiles) + 1)
    canvas = Image.new("RGB", (w, h + label_h + 2 * pad), "white")
    draw = ImageDraw.Draw(canvas)
    x0 = pad
    for (label, _), tile in zip(panels, tiles, strict=True):
        canvas.paste(Image.fromarray(_to_uint8(tile)), (x0, pad + label_h))
        draw.text((x0, 2), label, fill="black")
        x0 += tile.shape[2] + pad
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def bundled_patch(
    name: str = "astronaut", size: int = 128, top: int | None = None, left: int | None = None
) -> Tensor:
    """A ``(C, size, size)`` patch of one of scikit-image's bundled photographs.

    Without ``top``/``left`` the patch is centred on the photo's subject.
    """
    import skimage.data

    if name not in BUNDLED:
        raise ValueError(f"unknown bundled image {name!r}; choose from {', '.join(BUNDLED)}")
    a = getattr(skimage.data, name)()
    img = _to_chw(a.astype(np.float32) / 255.0, name)
    _, h, w = img.shape
    if size > min(h, w):
        raise ValueError(f"patch size {size} exceeds the {name} image ({h}x{w})")
    cy, cx = _FOCUS.get(name, ((h - 128) // 2, (w - 128) // 2))
    cy, cx = cy + 64, cx + 64
    top = min(max(cy - size // 2, 0), h - size) if top is None else top
    left = min(max(cx - size // 2, 0), w - size) if left is None else left
    if not (0 <= top <= h - size and 0 <= left <= w - size):
        raise ValueError(f"patch at ({top}, {left}) of size {size} leaves the {h}x{w} image")
    return img[:, top : top + size, left : left + size].contiguous()
