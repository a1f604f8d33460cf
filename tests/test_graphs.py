"""CUDA-graph capture of the fitting loop (GPU only; the CPU error is in test_batched)."""

from __future__ import annotations

import pytest
import torch

from metadip import graphs, reconstruct
from metadip.operators import CompressiveSensing, Denoise, PhaseRetrieval
from tests.conftest import smooth_image, tiny_init

pytestmark = pytest.mark.gpu
SHAPE = (3, 33, 35)


@pytest.fixture(autouse=True)
def exact_gpu_math():
    """float32 without TF32 and with deterministic cuDNN: what is left between two fits is
    float rounding (atomics), so a capture bug stands out. With TF32 convolutions, two eager
    fits already differ by ~1e-3 on an H200 (benchmarks/graph_check.py)."""
    saved = (
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.deterministic,
    )
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    yield
    (
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.deterministic,
    ) = saved


def _y(op, n=2):
    x = torch.stack([smooth_image(3, *SHAPE[1:], seed=i) for i in range(n)])
    return op.measure(x, torch.Generator().manual_seed(0)).cuda()


# lr 0.05: a fit that does not amplify rounding (at lr 0.3 the CS fit turns a 1e-6 change
# of y into a 2e-2 change of the image); atomics still make two fits differ in the last bits.
# "guided": an Educated-DIP input (A^T y, noise-level and coverage maps) computed inside
# the graph, as the shipped denoising default does. "tv-cs" / "tv-pr": the TV warm start
# (FISTA with the exact TV prox; for phase retrieval amplitude flow, with autograd of |Ax|
# inside it and the operator's norm from power iteration), as the shipped CS and PR defaults.
NETWORKS = {
    "guided": {"input": "image", "noise_level": True, "coverage": True},
    "tv-cs": {"input": "image", "noise_level": True, "guide": "tv", "guide_iters": 4},
    "tv-pr": {"input": "image", "noise_level": True, "guide": "tv", "guide_iters": 4},
}


@pytest.mark.parametrize("kind", ["denoise", "cs", "guided", "tv-cs", "tv-pr"])
def test_graph_replay_equals_eager(kind):
    graphs.clear_cache()
    sigma = 0.05 if kind.startswith("tv") else 0.0  # TV weight λ ∝ σ
    if kind.endswith("pr"):
        op = PhaseRetrieval(SHAPE, 0.25, sigma=sigma, seed=0)
    elif kind.endswith("cs"):
        op = CompressiveSensing(SHAPE, 0.25, sigma=sigma, seed=0)
    else:
        op = Denoise(SHAPE, 0.1)
    net = NETWORKS.get(kind)
    init = tiny_init(3, steps=8, lr=0.05, dtype=torch.float32, network=net)
    y = _y(op)
    eager = reconstruct(y, op, init=init, graph=False)
    for _ in range(2):  # the first call captures, the second replays the cached graph
        rec = reconstruct(y, op, init=init, graph=True)
        assert rec.graph
        torch.testing.assert_close(rec.image, eager.image, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(
            torch.tensor(rec.losses), torch.tensor(eager.losses), rtol=1e-4, atol=0
        )
    assert len(graphs._CACHE) == 1


def test_psnr_per_step_is_recorded_inside_the_graph():
    graphs.clear_cache()
    op = Denoise(SHAPE, 0.1)
    init = tiny_init(3, steps=6, lr=0.3, dtype=torch.float32)
    x = torch.stack([smooth_image(3, *SHAPE[1:], seed=i) for i in range(2)]).cuda()
    y = _y(op)
    eager = reconstruct(y, op, init=init, graph=False, x_true=x)
    for _ in range(2):
        rec = reconstruct(y, op, init=init, graph=True, x_true=x)
        assert rec.graph
        torch.testing.assert_close(
            torch.tensor(rec.psnr), torch.tensor(eager.psnr), rtol=1e-5, atol=1e-4
        )
    # Without x_true the same fit is a different graph.
    reconstruct(y, op, init=init, graph=True)
    assert len(graphs._CACHE) == 2


def test_shape_change_recaptures():
    graphs.clear_cache()
    init = tiny_init(3, steps=3, dtype=torch.float32)
    op = Denoise(SHAPE, 0.1)
    reconstruct(_y(op), op, init=init, graph=True)
    reconstruct(_y(op, n=3), op, init=init, graph=True)
    small = Denoise((3, 20, 21), 0.1)
    reconstruct(torch.rand(3, 20, 21, device="cuda"), small, init=init, graph=True)
    assert len(graphs._CACHE) == 3


def test_jitter_is_fresh_per_seed_and_repeatable():
    graphs.clear_cache()
    op = Denoise(SHAPE, 0.1)
    init = tiny_init(3, steps=5, rule="adam", lr=0.01, dtype=torch.float32)
    y = _y(op, n=1)
    a = reconstruct(y, op, init=init, seed=1, graph=True).image
    b = reconstruct(y, op, init=init, seed=1, graph=True).image
    c = reconstruct(y, op, init=init, seed=2, graph=True).image
    # Same seed: the same fit up to rounding; another seed: another jitter (0.14 apart on
    # the CPU).
    assert (a - b).abs().max() < 1e-4
    assert (a - c).abs().max() > 1e-2
