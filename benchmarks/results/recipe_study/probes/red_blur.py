"""Probe: plain RED with the shipped DnCNN on the evaluation's Gaussian deblurring
(9×9 kernel of std 2, σ = 25), started from Aᵀy, on the first 3 tuning patches:
mean PSNR after 12, 50 and 200 iterations for several denoiser weights λ (step
1 / (1 + λ); ‖AᵀA‖ = 0.995 for this blur, so units barely matter).

    python benchmarks/results/recipe_study/probes/red_blur.py \
        > benchmarks/results/recipe_study/probes/red_blur.txt
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
import recipe_study as rs  # noqa: E402

from metadip.classical import red  # noqa: E402
from metadip.classical.dncnn import shipped_denoiser  # noqa: E402
from metadip.metrics import psnr  # noqa: E402

torch.set_num_threads(1)
denoiser = shipped_denoiser()
patches = rs.read_list("tuning.tsv")[:3]
for lam in (0.05, 0.2, 1.0, 3.0, 10.0):
    res: dict[int, list[float]] = {k: [] for k in (0, 12, 50, 200)}
    for name, x in patches:
        _, _, x, op, y = rs.problem("blur", x, name)
        with torch.no_grad():
            xk = op.adjoint(y)[None]
            res[0].append(psnr(xk[0].clamp(0, 1), x))
            done = 0
            for k in (12, 50, 200):
                xk = red(xk, y[None], op, k - done, 1 / (1 + lam), lam, denoiser)
                done = k
                res[k].append(psnr(xk[0].clamp(0, 1), x))
    means = {k: round(sum(v) / len(v), 2) for k, v in res.items()}
    print(f"lambda {lam}: PSNR at iterations {means}", flush=True)
