"""The geometric self-ensemble: the eight symmetries of the square and the ensembled image
of an image-input (Educated-DIP) fit."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from metadip.api import reconstruct
from metadip.dihedral import ENSEMBLE_SIZES, check_ensemble, transform, untransform
from metadip.guide import guide_input
from metadip.init import MetaInit
from metadip.inner import _apply, _net_input, ensemble_output, output, prepare
from metadip.loop import fit
from metadip.metrics import PsnrTrack
from metadip.operators import Denoise
from metadip.shipped import default_init_path, large_init_path
from tests.conftest import tiny_init
from tests.test_educated import guided_init

F64 = torch.float64


def _init(steps: int = 3, ensemble: int = 1) -> MetaInit:
    """A small Educated-DIP init without the output average (which excludes an ensemble),
    its weights perturbed so that it is no identity map and no equivariant one."""
    init = guided_init(steps=steps)
    g = torch.Generator().manual_seed(0)
    weights = {
        k: v + 0.2 * torch.randn(v.shape, generator=g, dtype=F64) for k, v in init.weights.items()
    }
    return replace(init, weights=weights, ema=0.0, ensemble=ensemble)


def _references(x: torch.Tensor) -> list[torch.Tensor]:
    """D4 written with torch.rot90: the four rotations and their mirror images."""
    rots = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
    return rots + [r.flip(-1) for r in rots]


def test_transforms_are_the_eight_symmetries_and_invert():
    x = torch.rand(2, 3, 5, 5, dtype=F64)
    got = [transform(x, i) for i in range(8)]
    want = _references(x)
    # Each transform is one of D4's elements, and all eight are different.
    matches = [[j for j, w in enumerate(want) if torch.equal(g, w)] for g in got]
    assert all(len(m) == 1 for m in matches)
    assert sorted(m[0] for m in matches) == list(range(8))
    rect = torch.rand(3, 4, 7, dtype=F64)
    for i in range(8):
        t = transform(rect, i)
        assert t.shape[-2:] == ((7, 4) if i >= 4 else (4, 7))
        assert torch.equal(untransform(t, i), rect)


def test_ensemble_sizes_are_checked():
    assert ENSEMBLE_SIZES == (1, 2, 4, 8)
    for n in ENSEMBLE_SIZES:
        assert check_ensemble(n) == n
    for bad in (0, 3, 16, 2.0, True, "8", None):
        with pytest.raises(ValueError, match=r"ensemble must be one of \(1, 2, 4, 8\)"):
            check_ensemble(bad)


@pytest.mark.parametrize("n", [2, 4, 8])
def test_ensemble_output_averages_the_transformed_network(n):
    init = _init(ensemble=n)
    op = Denoise((3, 8, 12), 0.1)
    y = torch.rand(2, 3, 8, 12, dtype=F64)
    params, hyper = prepare(init, op.in_shape, batch=2, guide=guide_input(init.config, op, y))
    inp = _net_input(hyper, jitter=False)
    want = sum(untransform(_apply(params, hyper, transform(inp, i)), i) for i in range(n)) / n
    torch.testing.assert_close(ensemble_output(params, hyper), want, rtol=0, atol=1e-12)
    assert not torch.allclose(want, output(params, hyper))
    assert hyper.ensemble == n
    torch.testing.assert_close(
        ensemble_output(params, replace(hyper, ensemble=1)), output(params, hyper)
    )


def test_reconstruct_returns_the_ensemble_of_the_fitted_network():
    init = _init()
    op = Denoise((3, 16, 12), 0.1)
    y = torch.rand(3, 16, 12, dtype=F64)
    x = torch.rand(3, 16, 12, dtype=F64)
    rec = reconstruct(y, op, init=init, dtype=F64, ensemble=8, x_true=x)
    guide = guide_input(init.config, op, y[None])
    # Fresh parameters and jitter generator for each fit.
    params, hyper = prepare(init, op.in_shape, guide=guide)
    plain = fit(params, y[None], op, hyper, 3).image[0]
    params, hyper = prepare(init, op.in_shape, guide=guide)
    ensembled = fit(params, y[None], op, replace(hyper, ensemble=8), 3).image[0]
    torch.testing.assert_close(rec.image, ensembled)
    assert not torch.allclose(rec.image, plain)
    # The PSNR curve follows the returned image, and so does a callback's image.
    mse = (rec.image.clamp(0, 1) - x).pow(2).mean()
    assert rec.psnr[-1] == pytest.approx(float(10 * torch.log10(1 / mse)), abs=1e-9)
    track = PsnrTrack(x, (3,))
    reconstruct(y, op, init=init, dtype=F64, ensemble=8, callback=track)
    assert track.curve[0][1] == pytest.approx(rec.psnr[-1], abs=1e-9)
    # The init's own choice is the default; ensemble=1 turns it off.
    own = reconstruct(y, op, init=replace(init, ensemble=8), dtype=F64)
    torch.testing.assert_close(own.image, rec.image)
    off = reconstruct(y, op, init=replace(init, ensemble=8), dtype=F64, ensemble=1)
    torch.testing.assert_close(off.image, plain)
    # Item b of a batch is the ensemble of a fit of b alone.
    batch = reconstruct(torch.stack([y, y.flip(-2)]), op, init=init, dtype=F64, ensemble=8)
    torch.testing.assert_close(batch.image[0], rec.image)
    # Zero steps: the ensemble of the pretrained map.
    zero = reconstruct(y, op, init=init, dtype=F64, steps=0, ensemble=4)
    torch.testing.assert_close(zero.image, ensemble_output(params, replace(hyper, ensemble=4))[0])


def test_ensemble_is_refused_where_it_cannot_apply():
    op = Denoise((3, 8, 8), 0.1)
    y = torch.rand(3, 8, 8, dtype=F64)
    with pytest.raises(ValueError, match="reads fixed noise"):
        reconstruct(y, op, init=tiny_init(3), dtype=F64, steps=1, ensemble=2)
    with pytest.raises(ValueError, match="reads fixed noise"):
        replace(tiny_init(3), ensemble=8)
    with pytest.raises(ValueError, match="ema"):
        replace(_init(), ema=0.9, ensemble=8)
    for kw in ({"steps": "auto"}, {"steps": 2, "samples": 2}):
        with pytest.raises(ValueError, match="return iterates"):
            reconstruct(y, op, init=_init(), dtype=F64, ensemble=8, **kw)
    with pytest.raises(ValueError, match="ensemble must be one of"):
        reconstruct(y, op, init=_init(), dtype=F64, steps=1, ensemble=3)
    # An init that ensembles by itself still runs automatic stopping and chains.
    own = _init(ensemble=8)
    assert reconstruct(y, op, init=own, dtype=F64, steps=2, samples=2).std is not None


def test_ensemble_survives_save_and_load(tmp_path):
    init = _init(ensemble=4)
    assert MetaInit.load(init.save(tmp_path / "e.safetensors")).ensemble == 4
    # Files written before the field existed load without an ensemble.
    assert MetaInit.load(_init().save(tmp_path / "plain.safetensors")).ensemble == 1


def test_shipped_denoisers_ensemble_and_the_other_defaults_do_not():
    for path in (
        default_init_path("denoise", 3),
        default_init_path("inpaint", 3),
        large_init_path("denoise"),
    ):
        assert MetaInit.load(path).ensemble == 8, path
    for task in ("cs", "pr", "blur", "sr"):
        assert MetaInit.load(default_init_path(task, 3, linear=True)).ensemble == 1, task
    # A 1-channel problem with the colour denoiser: its ensembled image, channel-averaged,
    # and the 0-step map differs from the unensembled one.
    op = Denoise((1, 24, 20), 0.1)
    y = torch.rand(1, 24, 20)
    rec = reconstruct(y, op, steps=0)
    assert rec.image.shape == (1, 24, 20)
    assert not torch.allclose(rec.image, reconstruct(y, op, steps=0, ensemble=1).image)
