"""Baselines: each beats its input on a tiny problem; the grid search picks the best cell;
user-supplied denoisers plug in."""

from __future__ import annotations

import pytest
import torch

from metadip import baselines, denoisers, io
from metadip.metrics import psnr
from metadip.tasks import make_operator


def _problem(task: str, size: int = 32, ratio: float = 0.5, seed: int = 3):
    x = io.bundled_patch("astronaut", size)
    op = make_operator(task, x.shape, sigma=25 / 255, ratio=ratio, seed=seed)
    y = op.measure(x, torch.Generator().manual_seed(seed))
    return x, op, y


def test_bm3d_beats_noisy_input():
    pytest.importorskip("bm3d", reason="the bm3d baseline is an optional extra (baselines)")
    x, op, y = _problem("denoise")
    out = denoisers.bm3d_denoise(y, 25 / 255)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert psnr(out, x) > psnr(y.clamp(0, 1), x) + 3


@pytest.mark.parametrize("task", ["cs", "inpaint", "blur"])
def test_pnp_admm_beats_back_projection_linear(task):
    x, op, y = _problem(task)
    start = baselines.start_point(y[None], op)[0]
    outs = baselines.pnp_admm(y, op, denoisers.gaussian_denoiser(), 25.0, 0.5, 8, record=[2])
    assert set(outs) == {2, 8}
    assert outs[8].shape == x.shape
    assert psnr(outs[8], x) > psnr(start, x) + 1


def test_pnp_admm_beats_start_phase_retrieval():
    x, op, y = _problem("pr", ratio=0.5)
    start = baselines.start_point(y[None], op)[0]
    out = baselines.pnp_admm(y, op, denoisers.gaussian_denoiser(), 25.0, 0.5, 8)[8]
    assert psnr(out, x) > psnr(start, x) + 3


def test_pnp_admm_with_bm3d_beats_back_projection():
    pytest.importorskip("bm3d", reason="the bm3d baseline is an optional extra (baselines)")
    x, op, y = _problem("cs", ratio=0.5)
    start = baselines.start_point(y[None], op)[0]
    out = baselines.pnp_admm(y, op, denoisers.bm3d_denoiser(), 50.0, 0.5, 4)[4]
    assert psnr(out, x) > psnr(start, x) + 3


def test_conjugate_gradient_solves_spd_system():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(2, 6, 6, generator=g)
    a = m @ m.transpose(1, 2) + 6 * torch.eye(6)  # a batch of two SPD systems
    b = torch.randn(2, 6, generator=g)
    x = baselines.conjugate_gradient(lambda v: (a @ v[..., None])[..., 0], b, torch.zeros(2, 6))
    assert torch.allclose(x, torch.linalg.solve(a, b), atol=1e-4)


def test_grid_search_picks_best_cell():
    # A constructed score with a unique maximum at strength 25, rho 2, 8 iterations.
    calls = []

    def score(strength, rho, iters):
        calls.append((strength, rho, tuple(iters)))
        return {k: -abs(strength - 25) - abs(rho - 2) - abs(k - 8) for k in iters}

    grid = {"strength": (10.0, 25.0, 50.0), "rho": (0.5, 2.0, 8.0), "iters": (16, 4, 8)}
    best, cells = baselines.grid_search(score, grid)
    assert best == baselines.AdmmParams(25.0, 2.0, 8)
    assert len(cells) == 27 and len(calls) == 9  # one call per (strength, rho)
    assert all(c[2] == (4, 8, 16) for c in calls)
    assert max(cells, key=lambda c: c["score"])["score"] == 0


def test_grid_search_rejects_missing_iters_and_all_nan():
    with pytest.raises(ValueError, match="iters=8"):
        baselines.grid_search(
            lambda s, r, it: {4: 1.0}, {"strength": [1], "rho": [1], "iters": [4, 8]}
        )
    with pytest.raises(ValueError, match="NaN"):
        baselines.grid_search(
            lambda s, r, it: {k: float("nan") for k in it},
            {"strength": [1], "rho": [1], "iters": [4]},
        )


def test_pnp_admm_argument_errors():
    x, op, y = _problem("cs")
    den = denoisers.gaussian_denoiser()
    with pytest.raises(ValueError, match="rho > 0"):
        baselines.pnp_admm(y, op, den, 25.0, 0.0, 4)
    with pytest.raises(ValueError, match="record must lie"):
        baselines.pnp_admm(y, op, den, 25.0, 1.0, 4, record=[5])
    with pytest.raises(ValueError, match="measures"):
        baselines.pnp_admm(x, op, den, 25.0, 1.0, 4)


USER_DENOISER = '''
import torch


class Shrink(torch.nn.Module):
    """Pulls every pixel towards the image mean by a learned factor."""

    def __init__(self):
        super().__init__()
        self.keep = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        mean = x.mean(dim=(-2, -1), keepdim=True)
        return mean + self.keep * (x - mean)
'''


def test_user_denoiser_module_and_weights(tmp_path):
    src = tmp_path / "mydenoiser.py"
    src.write_text(USER_DENOISER)
    weights = tmp_path / "shrink.pth"
    torch.save({"keep": torch.tensor(0.25)}, weights)
    den = denoisers.load_denoiser(f"{src}:Shrink", weights)
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = den(x, 0.1)  # a module without a sigma argument is called as den(x)
    mean = x.mean(dim=(-2, -1), keepdim=True)
    assert torch.allclose(out, mean + 0.25 * (x - mean))
    with pytest.raises(FileNotFoundError, match="weights"):
        denoisers.load_denoiser(f"{src}:Shrink", tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="module:attr"):
        denoisers.load_denoiser("no-colon")
    with pytest.raises(AttributeError, match="Nope"):
        denoisers.load_denoiser(f"{src}:Nope")


def test_missing_bm3d_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "bm3d", None)  # makes `import bm3d` fail
    with pytest.raises(denoisers.BaselineUnavailable, match="metadip\\[baselines\\]"):
        denoisers.bm3d_denoise(torch.rand(3, 16, 16), 0.1)


def test_shipped_dncnn_denoises_and_takes_no_weights(tmp_path):
    x = io.bundled_patch("astronaut", 48)
    noisy = x + 25 / 255 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    den = denoisers.load_denoiser("dncnn")
    out = den(noisy[None], 25 / 255)[0]
    assert out.shape == x.shape and psnr(out.clamp(0, 1), x) > psnr(noisy.clamp(0, 1), x) + 5
    gray = den(noisy.mean(dim=0, keepdim=True)[None], 25 / 255)
    assert gray.shape == (1, 1, 48, 48)
    with pytest.raises(ValueError, match="no weights file"):
        denoisers.load_denoiser("dncnn", tmp_path / "w.pth")
