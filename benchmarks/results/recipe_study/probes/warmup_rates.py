"""Linear warm-up of the shipped denoiser's fine-tune rates: does it remove the dip of
its first 10 steps and gain at 50? Writes variants of ``metadip/weights/denoise.safetensors``
whose per-step Adam rates ramp from lr/n to lr over the first n steps (then constant, or
cosine-decayed), for the recipe study to run on the tuning patches:

    python benchmarks/results/recipe_study/probes/warmup_rates.py --out DIR
    python benchmarks/recipe_study.py run init:DIR/wu5_1e-4.safetensors denoise:25 \\
        --steps 0,10,20,30,50,100 --list tuning.tsv --patches 8 --rows ROWS

``warmup_rates.jsonl`` holds the rows, the method named ``warmup:<variant>``.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from pathlib import Path

import torch

from metadip.init import MetaInit

# name: (plateau rate, warm-up steps, cosine decay over the 50 steps)
VARIANTS = {
    "wu5_1e-4": (1e-4, 5, False),
    "wu10_1e-4": (1e-4, 10, False),
    "wu10_2e-4": (2e-4, 10, False),
    "wu10_cos3e-4": (3e-4, 10, True),
}


def warmed(base: MetaInit, lr: float, n: int, cosine: bool) -> MetaInit:
    t = torch.arange(base.steps, dtype=torch.float64)
    rates = lr * (1 + torch.cos(math.pi * t / base.steps)) / 2 if cosine else torch.full_like(t, lr)
    rates = rates * ((t + 1) / n).clamp(max=1.0)
    log_lr = rates.log()[:, None].expand(base.steps, base.log_lr.shape[1])
    return replace(base, log_lr=log_lr.to(base.log_lr).clone())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--init", default="metadip/weights/denoise.safetensors")
    args = p.parse_args()
    base = MetaInit.load(args.init)
    for name, spec in VARIANTS.items():
        print(warmed(base, *spec).save(args.out / f"{name}.safetensors"))


if __name__ == "__main__":
    main()
