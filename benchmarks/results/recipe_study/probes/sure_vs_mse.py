"""Probe: fine-tuning an Educated-DIP denoiser per image on the plain data fit (MSE)
against Stein's unbiased risk estimate (SURE), with Adam, on tuning patches.

    python benchmarks/results/recipe_study/probes/sure_vs_mse.py INIT mse|sure LR STEPS [N]

INIT: an image-input init file (the probe used the educated_denoise run's checkpoint
at step 1750, which is not kept); N tuning patches (σ = 25, the recipe study's seeds).
Prints each patch's PSNR after 0, 10, 20, 50, 100, 200 steps and the mean.
Recorded: sure_vs_mse.txt beside this file.
"""

import sys
from pathlib import Path

import torch
from torch.func import functional_call

from metadip.evaluate import cell_seed, parse_task
from metadip.guide import guide_input
from metadip.init import MetaInit
from metadip.metrics import psnr
from metadip.networks import build_network

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from benchmarks.recipe_study import read_list  # noqa: E402

torch.set_num_threads(1)
init = MetaInit.load(sys.argv[1])
loss_name, lr, steps = sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
count = int(sys.argv[5]) if len(sys.argv) > 5 else 8
net = build_network(init.config)
marks = (10, 20, 50, 100, 200)
results = []
for patch, x in read_list("tuning.tsv")[:count]:
    spec = parse_task("denoise:25")
    seed = cell_seed(patch, spec.spec)
    op = spec.operator(x.shape, seed)
    y = op.measure(x, torch.Generator().manual_seed(seed))[None]
    guide = guide_input(init.config, op, y)
    params = {k: v.clone().requires_grad_() for k, v in init.weights.items()}
    opt = torch.optim.Adam(params.values(), lr=lr)
    sigma2, n, eps = op.sigma**2, y.numel(), 1e-3
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        curve = {0: psnr(functional_call(net, params, (guide,))[0].clamp(0, 1), x)}
    for t in range(steps):
        out = functional_call(net, params, (guide,))
        loss = (out - y).pow(2).mean()
        if loss_name == "sure":
            probe = torch.randn(y.shape, generator=gen)
            moved = guide.clone()
            moved[:, :3] += eps * probe
            div = (probe * (functional_call(net, params, (moved,)) - out)).sum() / eps
            loss = loss - sigma2 + 2 * sigma2 * div / n
        opt.zero_grad()
        loss.backward()
        opt.step()
        if t + 1 in marks:
            with torch.no_grad():
                curve[t + 1] = psnr(functional_call(net, params, (guide,))[0].clamp(0, 1), x)
    results.append(curve)
    print(patch, {k: round(v, 2) for k, v in curve.items()}, flush=True)
mean = {k: round(sum(r[k] for r in results) / len(results), 3) for k in results[0]}
print(loss_name, lr, mean)
