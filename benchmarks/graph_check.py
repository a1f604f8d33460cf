"""How far CUDA-graph replay is from eager, and eager from itself, per backend (GPU only).

    python -m benchmarks.graph_check       # repo root; one table, about 20 s on one H100

For denoising and CS (the fits of ``tests/test_graphs.py``: 8 SGD steps at lr 0.05),
each usable backend, with torch's default GPU math or the tests' exact one (TF32 off,
deterministic cuDNN): the largest absolute difference between two eager fits, between
eager and graph, and between two graph replays. Eager-vs-eager above zero is run-to-run
nondeterminism (atomics, TF32, cuDNN's algorithm choice); a graph gap far above it is a
capture bug. (The first H200 run, 2026-11-26, used lr 0.3, where the CS fit is chaotic.)
"""

from __future__ import annotations

import os

import torch

from metadip import dispatch, graphs, reconstruct
from metadip.operators import CompressiveSensing, Denoise
from tests.conftest import smooth_image, tiny_init

SHAPE = (3, 33, 35)


def _gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("graph_check needs a CUDA device")
    x = torch.stack([smooth_image(3, *SHAPE[1:], seed=i) for i in range(2)])
    defaults = (
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
    )
    print("task     backend  exact-math  eager-eager  eager-graph  graph-graph")
    for kind in ("denoise", "cs"):
        op = Denoise(SHAPE, 0.1) if kind == "denoise" else CompressiveSensing(SHAPE, 0.25, seed=0)
        y = op.measure(x, torch.Generator().manual_seed(0)).cuda()
        init = tiny_init(3, steps=8, lr=0.05, dtype=torch.float32)
        for backend, ok in dispatch.available("cuda").items():
            if not ok:
                continue
            os.environ[dispatch.ENV] = backend
            for exact in (False, True):
                torch.backends.cudnn.deterministic = exact or defaults[0]
                torch.backends.cudnn.allow_tf32 = defaults[1] and not exact
                torch.backends.cuda.matmul.allow_tf32 = defaults[2] and not exact
                graphs.clear_cache()
                e1, e2 = (reconstruct(y, op, init=init, graph=False).image for _ in range(2))
                g1, g2 = (reconstruct(y, op, init=init, graph=True).image for _ in range(2))
                print(
                    f"{kind:8s} {backend:8s} {exact!s:10s}  {_gap(e1, e2):11.2e}  "
                    f"{_gap(e1, g1):11.2e}  {_gap(g1, g2):11.2e}",
                    flush=True,
                )
    os.environ.pop(dispatch.ENV, None)


if __name__ == "__main__":
    main()
