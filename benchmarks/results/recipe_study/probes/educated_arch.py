"""Probe: which Educated-DIP network pretrains best in 8 minutes on one CPU thread.

    python benchmarks/results/recipe_study/probes/educated_arch.py VARIANT MINUTES

VARIANT: A residual output, no normalization; B residual, instance norm; C sigmoid
output, instance norm (the DIP network with an image input); A25 = A trained at σ = 25
only (the others at σ uniform in [5, 50]). Skip network width 32, depth 4, input = the
noisy image, Adam 1e-3, batches of 8 patches of 64×64 from the training photos.
Prints the mean PSNR on 8 validation patches of 128×128 at σ = 15, 25, 50.
Recorded: educated_arch.jsonl beside this file.
"""

import json
import sys
import time

import torch

from metadip.data import PatchSampler, load_images
from metadip.metrics import psnr
from metadip.netconfig import NetConfig
from metadip.networks import build_network

torch.set_num_threads(1)
variant, minutes = sys.argv[1], float(sys.argv[2])
residual, norm = {
    "A": (True, "none"),
    "B": (True, "instance"),
    "C": (False, "instance"),
    "A25": (True, "none"),
}[variant]  # noqa: E501
cfg = NetConfig(
    out_channels=3, width=32, depth=4, noise_channels=0, num_fourier=0,
    input="image", residual=residual, norm=norm,
)  # fmt: skip
torch.manual_seed(0)
net = build_network(cfg)
train, val = load_images("natural", 3, 0.1, 0)
sampler, g = PatchSampler(train, 64), torch.Generator().manual_seed(0)
gv = torch.Generator().manual_seed(1)
xv = PatchSampler(val, 128, augment=False).sample(8, gv)
nv = torch.randn(xv.shape, generator=gv)
opt = torch.optim.Adam(net.parameters(), 1e-3)
t0, it = time.time(), 0
while time.time() - t0 < minutes * 60:
    x = sampler.sample(8, g)
    if variant == "A25":
        s = torch.full((8, 1, 1, 1), 25.0) / 255
    else:
        s = (5 + 45 * torch.rand(8, 1, 1, 1, generator=g)) / 255
    loss = (net(x + s * torch.randn(x.shape, generator=g)) - x).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    it += 1
out = {"variant": variant, "iters": it}
with torch.no_grad():
    for sig in (15, 25, 50):
        y = xv + sig / 255 * nv
        xh = net(y).clamp(0, 1)
        out[f"s{sig}"] = sum(psnr(xh[i], xv[i]) for i in range(8)) / 8
        out[f"noisy{sig}"] = sum(psnr(y[i].clamp(0, 1), xv[i]) for i in range(8)) / 8
print(json.dumps(out))
