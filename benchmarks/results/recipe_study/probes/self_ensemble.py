"""Self-ensemble of the denoiser: the image f_θ(z) against the mean of T⁻¹ f_θ(T z) over
the 8 flips and quarter turns T (the noise-level map is invariant under them), at the
init (0 steps) and after the fit, on the tuning patches, denoising σ = 25.

    python benchmarks/results/recipe_study/probes/self_ensemble.py \\
        [--init metadip/weights/denoise.safetensors] [--steps 50] > self_ensemble.txt
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "benchmarks"))

from recipe_study import _method_init, problem, read_list  # noqa: E402

from metadip.guide import guide_input  # noqa: E402
from metadip.inner import _apply, _net_input, prepare  # noqa: E402
from metadip.loop import fit  # noqa: E402
from metadip.metrics import psnr  # noqa: E402


def _t(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    x = torch.rot90(x, k, (-2, -1))
    return x.flip(-1) if flip else x


def _t_inv(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    return torch.rot90(x.flip(-1) if flip else x, -k, (-2, -1))


def ensemble(params: dict, hyper) -> torch.Tensor:
    inp = _net_input(hyper, jitter=False)
    outs = [_t_inv(_apply(params, hyper, _t(inp, k, f)), k, f) for k in range(4) for f in (0, 1)]
    return torch.stack(outs).mean(0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--init", default="metadip/weights/denoise.safetensors")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--list", default="tuning.tsv")
    args = p.parse_args()
    torch.set_num_threads(1)
    n = args.steps
    gains: dict[str, list[float]] = {"0": [], str(n): []}
    for patch, x in read_list(args.list):
        _, _, x, op, y = problem("denoise:25", x, patch)
        init = _method_init(f"init:{args.init}", op)
        guide = guide_input(init.config, op, y[None]) if init.config.guided else None
        params, hyper = prepare(init, tuple(x.shape), steps=n, guide=guide, problem=(op, y[None]))
        row: dict = {"patch": patch}
        with torch.no_grad():
            row["0"] = psnr(_apply(params, hyper, _net_input(hyper, False))[0].clamp(0, 1), x)
            row["0_ensemble"] = psnr(ensemble(params, hyper)[0].clamp(0, 1), x)
        last: list = []  # the fitted parameters, from the callback of the last step
        t0 = time.perf_counter()
        res = fit(params, y[None], op, hyper, n, callback=lambda i, k=last: k.append(i.params))
        row["fit_seconds"] = time.perf_counter() - t0
        row[str(n)] = psnr(res.image[0].clamp(0, 1), x)
        with torch.no_grad():
            row[f"{n}_ensemble"] = psnr(ensemble(last[-1], hyper)[0].clamp(0, 1), x)
        for k in gains:
            gains[k].append(row[f"{k}_ensemble"] - row[k])
        print(json.dumps(row), flush=True)
    for k, v in gains.items():
        a = np.asarray(v)
        se = a.std(ddof=1) / len(a) ** 0.5
        print(f"ensemble - plain at {k} steps: {a.mean():+.2f} ± {se:.2f} dB")


if __name__ == "__main__":
    main()
