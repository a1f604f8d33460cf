"""Copies training photos into ``.gpudata/`` so a GPU call can carry them.

    python benchmarks/pack_gpu_data.py [--mb 36]

The lent GPU machine sees only the repository (``../shared`` does not travel) and a
call carries at most 64 MiB in all, so this takes, from
``../shared/data/natural-train``: all of its validation files, listed in
``validation.txt`` so the run validates on the same files as every CPU run, then
training files in name order until ``--mb`` megabytes; ``.gpudata/`` gets a MANIFEST of
what it took. Add ``.gpudata`` to ``.git/info/exclude`` and name it in the
call's ``carry``; ``benchmarks/train_gpu.sh`` trains on it when it is there.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from metadip.data import VALIDATION_LIST, list_images, split_files

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT.parent / "shared" / "data" / "natural-train"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=float, default=36.0)
    args = p.parse_args()
    files = list_images(SOURCE)
    train, val = split_files([f.name for f in files], 0.1, 0)
    out = ROOT / ".gpudata"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    # Every validation file goes, listed, so the run validates on the patches the CPU
    # runs do (metadip.data.load_images honours the list); training photos fill the rest.
    total, taken = 0, []
    for name in [*val, *train]:
        size = (SOURCE / name).stat().st_size
        if total + size > args.mb * 2**20:
            if name in val:
                raise SystemExit(f"--mb {args.mb} does not hold the {len(val)} validation files")
            continue
        shutil.copy2(SOURCE / name, out / name)
        total += size
        taken.append(name)
    (out / VALIDATION_LIST).write_text("\n".join(val) + "\n")
    (out / "MANIFEST.txt").write_text("\n".join(taken) + "\n")
    n_train = len(taken) - len(val)
    print(
        f"{len(val)} validation and {n_train} of {len(train)} training photos, "
        f"{total / 2**20:.1f} MiB -> {out}"
    )


if __name__ == "__main__":
    main()
