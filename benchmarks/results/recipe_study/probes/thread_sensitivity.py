"""Probe: does the result of a default fit depend on the CPU thread count?

    python benchmarks/results/recipe_study/probes/thread_sensitivity.py THREADS

The demo's problems on the astronaut patch (CS m/n = 1/4 and denoising σ = 25, seed 0),
fitted with init="default", 50 steps. Threads change only the order of floating-point
sums; a stable fit moves by rounding, a chaotic one by decibels. Recorded:
thread_sensitivity.txt beside this file.
"""

import sys

import torch

import metadip
from metadip import io
from metadip.tasks import make_operator

torch.set_num_threads(int(sys.argv[1]))
x = io.bundled_patch("astronaut", 128)
for i, task in enumerate(("denoise", "cs")):
    op = make_operator(task, x.shape, sigma=25 / 255, ratio=0.25, seed=0)
    y = op.measure(x, torch.Generator().manual_seed(i))
    rec = metadip.reconstruct(y, op, seed=0)
    print(f"threads {sys.argv[1]} {task}: {metadip.psnr(rec.image, x):.3f} dB ({rec.init})")
