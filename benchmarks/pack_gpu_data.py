"""Copies training photos into ``.gpudata/`` so a GPU call can carry them.

    python benchmarks/pack_gpu_data.py [--mb 36]

The lent GPU machine sees only the repository (``../shared`` does not travel) and a
call carries at most 64 MiB in all, so this takes, from
``../shared/data/natural-train``: all of its validation files, listed in
``validation.txt`` so the run validates on the same files as every CPU run, then
training files in name order, each one that still fits in ``--mb`` megabytes, until the
room left is smaller than the smallest file packed, each as lossless WebP (about
73 % of the PNG's size; kept only where the trainer reads the same pixels, else the
file is copied as it is; ``--png`` copies them all); ``.gpudata/`` gets a MANIFEST of
what it took (git ignores ``.gpudata``). Name it in the
call's ``carry``; ``benchmarks/train_gpu.sh`` trains on it when it is there.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from metadip.data import VALIDATION_LIST, list_images, read_image, split_files

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT.parent / "shared" / "data" / "natural-train"


def _pack(src: Path, out: Path, webp: bool) -> str:
    """Copies ``src`` into ``out``, as lossless WebP when ``webp`` and the trainer reads
    the copy exactly as the original (both channel counts); returns the copy's name."""
    if webp:
        dst = out / f"{src.stem}.webp"
        with Image.open(src) as im:
            im = im if im.mode in ("L", "RGB") else im.convert("RGB")
            # Effort 4: 73 % of the PNG in 0.2 s a photo; the slowest (6) gives 71 % in 4.5 s.
            im.save(dst, "WEBP", lossless=True, quality=80, method=4)
        if all(np.array_equal(read_image(dst, c), read_image(src, c)) for c in (1, 3)):
            return dst.name
        dst.unlink()
    shutil.copy2(src, out / src.name)
    return src.name


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=float, default=36.0)
    p.add_argument("--png", action="store_true", help="copy the PNG files as they are (no WebP)")
    args = p.parse_args()
    files = list_images(SOURCE)
    stems = [f.stem for f in files]
    if not args.png and len(set(stems)) != len(stems):
        raise SystemExit("two source files share a name stem: use --png")
    train, val = split_files([f.name for f in files], 0.1, 0)
    out = ROOT / ".gpudata"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    # Every validation file goes, listed, so the run validates on the patches the CPU
    # runs do (metadip.data.load_images honours the list); training photos fill the rest.
    total, taken, packed_val, smallest = 0, [], [], float("inf")
    for name in [*val, *train]:
        if name not in val and args.mb * 2**20 - total < smallest:
            break  # no photo seen so far would fit: stop converting
        packed = _pack(SOURCE / name, out, webp=not args.png)
        size = (out / packed).stat().st_size
        if total + size > args.mb * 2**20:
            (out / packed).unlink()
            if name in val:
                raise SystemExit(f"--mb {args.mb} does not hold the {len(val)} validation files")
            continue
        total, smallest = total + size, min(smallest, size)
        taken.append(f"{name}\t{packed}")
        if name in val:
            packed_val.append(packed)
    (out / VALIDATION_LIST).write_text("\n".join(packed_val) + "\n")
    (out / "MANIFEST.txt").write_text("source\tpacked\n" + "\n".join(taken) + "\n")
    n_train = len(taken) - len(val)
    print(
        f"{len(val)} validation and {n_train} of {len(train)} training photos, "
        f"{total / 2**20:.1f} MiB -> {out}"
    )


if __name__ == "__main__":
    main()
