"""Probe: the denoising default out of its training distribution (a face, synthetic and
scanned images), σ = 25, against BM3D and the best hand-tuned vanilla DIP(50).

    python benchmarks/results/recipe_study/probes/out_of_distribution.py

Images: scikit-image's astronaut (the face, 128×128 at (0, 180)), checkerboard (a
synthetic pattern), text (a scan of printed text), camera (a gray photo, for scale),
gray ones served by the colour init through the channel mean. Prints one JSON line per
image with PSNR of the noisy input, the default after 1 step (≈ the pretrained network), the
default at 50 steps, BM3D and vanilla DIP(50) (Adam 0.002, width 32). Recorded:
out_of_distribution.jsonl beside this file.
"""

import json
import math
from dataclasses import replace

import numpy as np
import skimage.data
import torch

import metadip
from metadip.denoisers import bm3d_denoise
from metadip.init import MetaInit

torch.set_num_threads(1)


def crop(name: str, top: int, left: int) -> torch.Tensor:
    a = getattr(skimage.data, name)().astype(np.float32) / 255.0
    a = a[top : top + 128, left : left + 128]
    t = torch.from_numpy(a.copy())
    return t.permute(2, 0, 1).contiguous() if t.dim() == 3 else t[None]


def psnr(img: torch.Tensor, x: torch.Tensor) -> float:
    return round(metadip.psnr(img.clamp(0, 1), x), 2)


vanilla = MetaInit.random(3, width=32, depth=4, steps=50, rule="adam", seed=0)
vanilla = replace(vanilla, log_lr=torch.full_like(vanilla.log_lr, math.log(0.002)), ema=0.0)
images = {
    "astronaut-face": crop("astronaut", 0, 180),
    "checkerboard": crop("checkerboard", 36, 36),
    "text": crop("text", 0, 200),
    "camera": crop("camera", 100, 200),
}
for name, x in images.items():
    op = metadip.Denoise(x.shape, 25 / 255)
    y = op.measure(x, torch.Generator().manual_seed(0))
    row = {"image": name, "channels": x.shape[0], "noisy": psnr(y, x)}
    row["default_1"] = psnr(metadip.reconstruct(y, op, steps=1, seed=0).image, x)
    row["default_50"] = psnr(metadip.reconstruct(y, op, seed=0).image, x)
    row["bm3d"] = psnr(bm3d_denoise(y, 25 / 255), x)
    row["vanilla_dip_50"] = psnr(metadip.reconstruct(y, op, init=vanilla, seed=0).image, x)
    print(json.dumps(row), flush=True)
