"""50-step PSNR at 128x128 of candidate inits on selection crops (validation split, seed 100,
not the evaluation's crops): denoise sigma 25, cs and pr at m/n = 1/4.

    python benchmarks/results/default_train/pick_init.py INIT [INIT ...]
"""

import json
import sys

import torch

from metadip import reconstruct
from metadip.evaluate import load_patches
from metadip.metrics import psnr
from metadip.tasks import make_operator

TASKS = [("denoise", {"sigma": 25 / 255}), ("cs", {"ratio": 0.25}), ("pr", {"ratio": 0.25})]

torch.set_num_threads(2)
patches = load_patches("natural", 2, 128, seed=100)
for candidate in sys.argv[1:]:
    row = {}
    for task, kw in TASKS:
        total = 0.0
        for i, (_name, x) in enumerate(patches):
            op = make_operator(task, tuple(x.shape), seed=10 + i, **kw)
            y = op.measure(x, torch.Generator().manual_seed(20 + i))
            rec = reconstruct(y, op, init=candidate, steps=50, seed=0)
            total += psnr(torch.as_tensor(rec.image).clamp(0, 1), x)
        row[task] = total / len(patches)
    row["mean"] = sum(row.values()) / len(TASKS)
    print(candidate, json.dumps(row), flush=True)
