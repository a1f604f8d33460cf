"""One Educated-DIP pretraining step (the training that makes the shipped defaults)
against the compute floor.

    METADIP_BENCH_THREADS=1 pytest benchmarks/bench_educated.py \\
        --benchmark-json=benchmarks/results/<date>-cpu-educated.json

The denoiser's recipe (``configs/educated_denoise.toml``): a meta-batch of 16 noisy
64×64 patches through the residual skip network with a noise-level map, mean squared
error to the clean patches, backward, clipping and Adam (``pretrain_step``), at widths
32 (shipped) and 48. ``extra_info``: ms per step, GFLOP per step (forward and backward,
``torch.utils.flop_counter``), the fp32 matmul rate measured in the same process, the
achieved GFLOP/s and the ratio to the floor, with threads, commit and load average.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.conftest import bench_threads, devices, environment, floor_info, sync
from metadip.guide import guide_input
from metadip.networks import build_network
from metadip.operators import Denoise
from metadip.train import TrainConfig
from metadip.train.educated import educated_init, pretrain_step

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "educated_denoise.toml"


_threads = bench_threads()


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("width", [32, 48])
def test_pretrain_step(benchmark, width, device):
    cfg = replace(TrainConfig.from_toml(CONFIG), width=width)
    init = educated_init(cfg, torch.float32)
    net = build_network(init.config).to(device)
    net.load_state_dict(init.weights)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.outer_lr)
    g = torch.Generator().manual_seed(0)
    shape = (cfg.meta_batch, cfg.channels, cfg.patch, cfg.patch)
    x = torch.rand(shape, generator=g)
    op = Denoise(shape[1:], 25 / 255)
    y = x + op.sigma * torch.randn(shape, generator=g)
    guide, x = guide_input(init.config, op, y).to(device), x.to(device)

    def one_step():
        out = pretrain_step(net, opt, guide, x, cfg.loss, cfg.clip)
        sync(device)
        return out

    one_step()
    benchmark.pedantic(one_step, rounds=10, iterations=1, warmup_rounds=2)
    seconds = benchmark.stats.stats.median
    with FlopCounterMode(display=False) as counter:
        (net(guide) - x).pow(2).mean().backward()
    flops = counter.get_total_flops()
    benchmark.group = "educated-pretrain-step"
    benchmark.extra_info.update(
        environment(device),
        batch=list(shape),
        network=f"educated skip {cfg.depth}x{width}",
        **floor_info(seconds, flops, device),
    )
