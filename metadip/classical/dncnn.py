"""A small DnCNN-style denoiser (Zhang et al.) for RED: ``D(x) = x − r(x)``, r a stack of
3×3 convolutions with ReLUs that predicts the noise, blind to its level.

Trained by the project on crops of the training photos with Gaussian noise of σ uniform
in ``sigma`` (0-255 scale):

    python -m metadip.classical.dncnn --out metadip/weights/dncnn.safetensors [--steps N]

``shipped_denoiser()`` loads the committed weights (``metadip/weights/dncnn.safetensors``)
as a frozen function ``(B, C, H, W) -> (B, C, H, W)`` (C = 3; C = 1 runs as gray RGB).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save
from torch import Tensor, nn

__all__ = ["DNCNN_NAME", "DnCNN", "shipped_denoiser", "train_dncnn"]

DNCNN_NAME = "dncnn.safetensors"


class DnCNN(nn.Module):
    """``x − r(x)``: ``depth`` 3×3 convolutions of ``width`` channels (ReLU between)."""

    def __init__(self, channels: int = 3, width: int = 32, depth: int = 6):
        super().__init__()
        if depth < 2 or width < 1 or channels < 1:
            raise ValueError(f"DnCNN needs depth >= 2, width >= 1, got {depth}, {width}")
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(width, channels, 3, padding=1))
        self.body = nn.Sequential(*layers)
        self.shape = {"channels": channels, "width": width, "depth": depth}

    def forward(self, x: Tensor) -> Tensor:
        return x - self.body(x)


def _path() -> Path:
    return Path(str(resources.files("metadip") / "weights" / DNCNN_NAME))


@cache
def _load(device: str, dtype: torch.dtype) -> DnCNN:
    path = _path()
    if not path.is_file():
        raise FileNotFoundError(
            f"the RED solver needs the DnCNN weights {path}; train them with "
            "`python -m metadip.classical.dncnn --out " + str(path) + "`"
        )
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        shape = json.loads(f.metadata()["shape"])
    net = DnCNN(**shape)
    net.load_state_dict(load_file(str(path)))
    net = net.to(device=device, dtype=dtype).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def shipped_denoiser(device: Any = "cpu", dtype: torch.dtype = torch.float32):
    """The committed DnCNN as a function ``(B, C, H, W) -> (B, C, H, W)``, differentiable in
    its input, its weights frozen; a 1-channel image is denoised as gray RGB."""
    net = _load(str(torch.device(device)), dtype)

    def denoise(x: Tensor) -> Tensor:
        if x.shape[1] == 1 and net.shape["channels"] == 3:
            return net(x.expand(-1, 3, -1, -1)).mean(dim=1, keepdim=True)
        return net(x)

    return denoise


def train_dncnn(
    out: str | Path,
    steps: int = 4000,
    batch: int = 16,
    patch: int = 48,
    sigma: tuple[float, float] = (0.0, 50.0),
    lr: float = 1e-3,
    seed: int = 0,
    source: str = "auto",
    width: int = 32,
    depth: int = 6,
    progress: bool = True,
) -> Path:
    """Trains a DnCNN (L2 on the noise-free crop, Adam at ``lr`` with cosine decay) and
    writes it to ``out`` with its validation PSNR (σ = 25, 8 crops of the validation
    split) in the header."""
    from metadip.data import PatchSampler, load_images
    from metadip.metrics import psnr

    if steps < 1 or batch < 1:
        raise ValueError(f"steps and batch must be >= 1, got {steps} and {batch}")
    train, val = load_images(source, 3)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    sampler = PatchSampler(train, size=patch)
    val_x = PatchSampler(val, size=128, augment=False).sample(8, torch.Generator().manual_seed(1))
    val_y = val_x + 25 / 255 * torch.randn(val_x.shape, generator=torch.Generator().manual_seed(2))
    net = DnCNN(3, width, depth)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    t0 = time.perf_counter()
    for s in range(1, steps + 1):
        for g in opt.param_groups:
            g["lr"] = lr * (1 + math.cos(math.pi * (s - 1) / steps)) / 2
        x = sampler.sample(batch, gen)
        level = torch.empty(batch, 1, 1, 1).uniform_(sigma[0] / 255, sigma[1] / 255, generator=gen)
        y = x + level * torch.randn(x.shape, generator=gen)
        loss = (net(y) - x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress and (s % 100 == 0 or s == steps):
            took = time.perf_counter() - t0
            print(f"step {s}/{steps} loss {float(loss.detach()):.5f} ({took:.0f} s)")
    with torch.no_grad():
        val_psnr = float(psnr(net(val_y).clamp(0, 1), val_x))
    meta = {
        "shape": json.dumps(net.shape),
        "train": json.dumps(
            {
                "steps": steps,
                "batch": batch,
                "patch": patch,
                "sigma": list(sigma),
                "lr": lr,
                "seed": seed,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        ),
        "val_psnr_sigma25": f"{val_psnr:.3f}",
        "val_psnr_noisy": f"{float(psnr(val_y.clamp(0, 1), val_x)):.3f}",
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(save({k: v.contiguous() for k, v in net.state_dict().items()}, metadata=meta))
    print(f"wrote {out}: validation PSNR {val_psnr:.2f} dB at σ = 25")
    return out


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description="Trains the DnCNN denoiser of the RED solver.")
    p.add_argument("--out", default=str(_path()))
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=48)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default="auto")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    return train_dncnn(
        args.out, args.steps, args.batch, args.patch, lr=args.lr, seed=args.seed, source=args.data
    )


if __name__ == "__main__":
    main()
