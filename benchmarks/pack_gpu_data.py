"""Copies training photos into ``.gpudata/`` so a GPU call can carry them.

    python benchmarks/pack_gpu_data.py [--mb 36]

The lent GPU machine sees only the repository (``../shared`` does not travel) and a
call carries at most 64 MiB in all, so this takes the training split of
``../shared/data/natural-train`` (the split every metadip run uses: validation files
never go) in name order until ``--mb`` megabytes, and writes ``.gpudata/`` with a
MANIFEST of what it took. Add ``.gpudata`` to ``.git/info/exclude`` and name it in the
call's ``carry``; ``benchmarks/train_gpu.sh`` trains on it when it is there.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from metadip.data import list_images, split_files

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT.parent / "shared" / "data" / "natural-train"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=float, default=36.0)
    args = p.parse_args()
    files = list_images(SOURCE)
    train, _ = split_files([f.name for f in files], 0.1, 0)
    out = ROOT / ".gpudata"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    total, taken = 0, []
    for name in train:
        size = (SOURCE / name).stat().st_size
        if total + size > args.mb * 2**20:
            continue
        shutil.copy2(SOURCE / name, out / name)
        total += size
        taken.append(name)
    (out / "MANIFEST.txt").write_text("\n".join(taken) + "\n")
    print(f"{len(taken)} of {len(train)} training photos, {total / 2**20:.1f} MiB -> {out}")


if __name__ == "__main__":
    main()
