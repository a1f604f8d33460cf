"""Paired timing of the batched (grouped-convolution) network in channels-last memory
against NCHW, on the GPU: a candidate lever for the batched-throughput target (47
reconstructions/s at B = 128 on an H100, target 300).

    python benchmarks/gpu_layout_ab.py [--device cuda] [--batches 1,32,128] [--reps 3]

The batched fit runs B networks side by side as grouped convolutions (``SkipNet`` with
``groups = B``), which keep NCHW on every device: on the CPU channels-last measured
between −3 % and +12 % for them. Here ``on`` gives such a network its input in
channels-last memory and lays each within-group concatenation out the same way (the
convolutions then run in cuDNN's NHWC kernels); ``off`` is the network as shipped. Each
B alternates the two settings (order flipped every round) on 50-step CS reconstructions
with the shipped default (graphed on CUDA, as ``reconstruct`` does by default), checks
that both give the same images (to float32 rounding, TF32 aside), and prints one JSON
object: per B the median seconds of each setting, reconstructions/s and the ratio.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import metadip
import metadip.networks as networks
from metadip.tasks import make_operator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.provenance import git_commit  # noqa: E402

SIZE, STEPS = 128, 50
GROUP_CAT, FORWARD = networks._group_cat, networks.SkipNet.forward


def _channels_last_group_cat(a: torch.Tensor, b: torch.Tensor, groups: int) -> torch.Tensor:
    return GROUP_CAT(a, b, groups).contiguous(memory_format=torch.channels_last)


def _channels_last_forward(self, x: torch.Tensor) -> torch.Tensor:
    if self.groups > 1:
        x = x.contiguous(memory_format=torch.channels_last)
    return FORWARD(self, x)


def use(on: bool) -> None:
    networks._group_cat = _channels_last_group_cat if on else GROUP_CAT
    networks.SkipNet.forward = _channels_last_forward if on else FORWARD


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batches", default="1,32,128")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--task", default="cs")
    args = p.parse_args()
    dev = args.device

    def sync() -> None:
        if dev == "cuda":
            torch.cuda.synchronize()

    commit = git_commit()
    name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    out: dict = {"device": name, "commit": commit, "torch": torch.__version__, "task": args.task}
    kw = {"sigma": 25 / 255} if args.task == "denoise" else {"ratio": 0.25}
    op = make_operator(args.task, (3, SIZE, SIZE), seed=0, **kw)
    for b in (int(v) for v in args.batches.split(",")):
        x = torch.rand(b, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
        y = op.measure(x, torch.Generator().manual_seed(1)).to(dev)
        # One operator object per setting: reconstruct keys its captured graphs on the
        # caller's operator, so the settings never replay each other's graph.
        ops = {k: copy.deepcopy(op).to(device=dev) for k in ("off", "on")}
        images, times = {}, {"off": [], "on": []}
        for setting in ("off", "on"):  # warm-up and capture, once per setting
            use(setting == "on")
            images[setting] = metadip.reconstruct(y, ops[setting], steps=STEPS, seed=0).image
        for r in range(args.reps):
            for setting in ("off", "on") if r % 2 == 0 else ("on", "off"):
                use(setting == "on")
                sync()
                t0 = time.perf_counter()
                metadip.reconstruct(y, ops[setting], steps=STEPS, seed=0)
                sync()
                times[setting].append(time.perf_counter() - t0)
        use(False)
        med = {k: statistics.median(v) for k, v in times.items()}
        out[f"B{b}"] = {
            **{f"{k}_median_s": v for k, v in med.items()},
            **{f"{k}_per_s": b / v for k, v in med.items()},
            "speedup": med["off"] / med["on"],
            "max_image_diff": float((images["on"] - images["off"]).abs().max()),
        }
        print(json.dumps({f"B{b}": out[f"B{b}"]}), flush=True)
    out["loadavg_1min"] = os.getloadavg()[0]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
