"""Out-of-distribution check of the shipped task defaults (Educated DIP, pretrained on
natural photos) against methods without pretraining, on images unlike the training set:
a face, flat-colour synthetic shapes and a checkerboard (128×128, colour).

    python benchmarks/ood_study.py [--threads 1]

Each (image, task, method) is measured as ``benchmarks/recipe_study.py`` measures it
(same seeds, same operators, ``run_one``); rows go to
``benchmarks/results/recipe_study/ood.jsonl`` (a rerun skips what is there) and the
table to ``ood.md`` beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import recipe_study as rs  # noqa: E402

from metadip import io  # noqa: E402

OUT = rs.OUT
# task -> [(method, steps)]
PLAN = {
    "denoise:25": [
        ("default", [50]),
        ("maml-default", [50]),
        ("dip:0.01:ema", [50, 300]),
        ("bm3d", [0]),
    ],
    "inpaint": [("default", [0, 50]), ("maml-default", [50]), ("dip:0.01:ema", [50, 300])],
}


def images() -> dict[str, torch.Tensor]:
    """``name -> (3, 128, 128)`` in [0, 1]: a face and two synthetic images."""
    from skimage.data import checkerboard
    from skimage.draw import random_shapes

    shapes, _ = random_shapes(
        (128, 128), max_shapes=12, min_size=12, max_size=48, rng=0, channel_axis=-1
    )
    board = np.repeat(checkerboard()[:128, :128, None], 3, axis=-1)
    to = lambda a: torch.from_numpy(a.astype(np.float32).transpose(2, 0, 1) / 255.0)  # noqa: E731
    return {
        "face": io.bundled_patch("astronaut", 128),
        "shapes": to(shapes).contiguous(),
        "checkerboard": to(board).contiguous(),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows_path = OUT / "ood.jsonl"
    done = set()
    if rows_path.is_file():
        done = {
            (r["image"], r["task"], r["method"])
            for r in map(json.loads, rows_path.read_text().splitlines())
        }
    prov = rs.provenance(args.threads)
    for name, x in images().items():
        for task, methods in PLAN.items():
            for method, steps in methods:
                if (name, task, method) in done:
                    continue
                row = rs.run_one(method, task, x, f"ood-{name}", steps)
                row.update(image=name, task=task, method=method, **prov)
                with open(rows_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(name, task, method, row["psnr"], flush=True)
    rows = [json.loads(s) for s in rows_path.read_text().splitlines()]
    names = list(images())
    lines = ["| task | method | steps | " + " | ".join(names) + " |"]
    lines.append("|---|---|---:|" + "---:|" * len(names))
    for task, methods in PLAN.items():
        for method, steps in methods:
            for n in steps:
                cells = []
                for name in names:
                    hit = [
                        r
                        for r in rows
                        if (r["image"], r["task"], r["method"]) == (name, task, method)
                    ]
                    cells.append(f"{hit[-1]['psnr'][str(n)]:.2f}" if hit else "—")
                lines.append(f"| {task} | {method} | {n} | " + " | ".join(cells) + " |")
    (OUT / "ood.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
