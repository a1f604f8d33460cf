"""Educated DIP: the image-input network, its guide, pretraining and reconstruction."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from metadip.api import reconstruct
from metadip.cli import main
from metadip.guide import guide_input
from metadip.init import MetaInit
from metadip.inner import _apply, _net_input, init_state, output, prepare, step
from metadip.loop import fit
from metadip.losses import sure_term, sure_weights
from metadip.netconfig import NetConfig
from metadip.networks import build_network
from metadip.operators import CompressiveSensing, Denoise, Inpainting, PhaseRetrieval, Stacked
from metadip.posterior import draw
from metadip.train import TrainConfig
from metadip.train.config import METHODS
from metadip.train.educated import pretrain_step

F64 = torch.float64
GUIDED = {"input": "image", "residual": True, "norm": "none", "noise_channels": 0}


def guided_init(channels: int = 3, noise_level: bool = True, steps: int = 3) -> MetaInit:
    init = MetaInit.random(
        channels,
        width=6,
        depth=2,
        steps=steps,
        rule="adam",
        lr=1e-3,
        num_fourier=0,
        dtype=F64,
        network={**GUIDED, "noise_level": noise_level},
    )
    return init


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(4):
        big = np.kron(rng.random((6, 6, 3)), np.ones((8, 8, 1)))
        a = (255 * (0.7 * big + 0.3 * rng.random((48, 48, 3)))).astype(np.uint8)
        Image.fromarray(a).save(folder / f"p{i}.png")
    return folder


def test_config_rejects_guide_options_without_an_image_input():
    with pytest.raises(ValueError, match="need input='image'"):
        NetConfig(residual=True)
    with pytest.raises(ValueError, match="need input='image'"):
        NetConfig(noise_level=True)
    with pytest.raises(ValueError, match="need input='image'"):
        NetConfig(coverage=True)
    with pytest.raises(ValueError, match="norm must be one of"):
        NetConfig(norm="batch")
    with pytest.raises(ValueError, match="skip network"):
        NetConfig(kind="siren", input="image")


def test_residual_network_starts_as_the_identity_on_its_guide():
    cfg = NetConfig(out_channels=3, width=8, depth=2, num_fourier=0, **GUIDED, noise_level=True)
    assert cfg.in_channels == 4 and cfg.guide_channels == 4
    net = build_network(cfg).double()
    x = torch.rand(2, 4, 16, 16, dtype=F64)
    torch.testing.assert_close(net(x), x[:, :3])
    # No normalization layers: scaling the input scales the features (no lost intensity).
    assert not any("norm" in type(m).__name__.lower() for m in net.modules())


def test_guide_is_the_adjoint_with_a_noise_level_map():
    cfg = guided_init().config
    op = CompressiveSensing((3, 8, 8), ratio=0.5, sigma=0.1, seed=0).to(dtype=F64)
    y = op.measure(torch.rand(3, 8, 8, dtype=F64), torch.Generator().manual_seed(0))[None]
    g = guide_input(cfg, op, y)
    assert g.shape == (1, 4, 8, 8)
    torch.testing.assert_close(g[:, :3], op.adjoint(y))
    assert torch.all(g[:, 3] == 0.1)


def test_gray_guide_is_repeated_to_the_colour_channels():
    cfg = guided_init().config
    ops = Stacked([Denoise((1, 8, 8), 0.1), Denoise((1, 8, 8), 0.2)])
    y = torch.rand(2, 1, 8, 8, dtype=F64)
    g = guide_input(cfg, ops, y)
    assert g.shape == (2, 4, 8, 8)
    torch.testing.assert_close(g[:, :3], y.expand(-1, 3, -1, -1))
    assert torch.all(g[0, 3] == 0.1) and torch.all(g[1, 3] == 0.2)


def test_coverage_channel_is_each_problem_s_observation_mask():
    cfg = replace(guided_init().config, coverage=True)
    assert cfg.guide_channels == 5
    ops = Stacked([Inpainting((3, 8, 8), ratio=r, sigma=0.1, seed=r * 10) for r in (0.3, 0.7)])
    y = ops.measure(torch.rand(2, 3, 8, 8))
    g = guide_input(cfg, ops, y)
    assert g.shape == (2, 5, 8, 8)
    torch.testing.assert_close(g[:, :3], y)
    for b, op in enumerate(ops.ops):
        torch.testing.assert_close(g[b, 4], op.mask)
    assert not torch.equal(g[0, 4], g[1, 4])
    # Denoising observes every pixel.
    g = guide_input(cfg, Denoise((3, 8, 8), 0.1), torch.rand(1, 3, 8, 8))
    assert torch.all(g[:, 4] == 1)


def test_nonlinear_operator_is_refused_with_the_reason():
    op = PhaseRetrieval((3, 8, 8), ratio=0.5, sigma=0.0, seed=0)
    with pytest.raises(ValueError, match="not linear"):
        reconstruct(torch.rand(*op.out_shape), op, init=guided_init())


def test_prepare_requires_the_guide_and_refuses_it_for_noise_inits():
    init = guided_init()
    with pytest.raises(ValueError, match="needs guide"):
        prepare(init, (3, 8, 8))
    with pytest.raises(ValueError, match="only used by an init"):
        prepare(MetaInit.random(3, width=4, depth=2), (3, 8, 8), guide=torch.zeros(1, 4, 8, 8))


def test_reconstruct_with_a_guided_init_equals_the_fit_from_its_guide():
    init = guided_init(steps=3)
    op = Denoise((3, 16, 16), 0.1)
    y = torch.rand(3, 16, 16, dtype=F64)
    rec = reconstruct(y, op, init=init, dtype=F64)
    params, hyper = prepare(init, op.in_shape, guide=guide_input(init.config, op, y[None]))
    torch.testing.assert_close(rec.image, fit(params, y[None], op, hyper, 3).image[0])
    assert not torch.equal(rec.image, y)
    batch = reconstruct(torch.stack([y, y.flip(-1)]), op, init=init, dtype=F64)
    torch.testing.assert_close(batch.image[0], rec.image)


def test_config_defaults_depend_on_the_method():
    assert METHODS == ("maml", "educated")
    assert (TrainConfig().rule, TrainConfig().inner_lr) == ("sgd", 1.0)
    cfg = TrainConfig(method="educated")
    assert (cfg.rule, cfg.inner_lr) == ("adam", 1e-4)
    with pytest.raises(ValueError, match="method must be one of"):
        TrainConfig(method="reptile")
    with pytest.raises(ValueError, match="mono_fraction"):
        TrainConfig(mono_fraction=1.5)


def test_cosine_outer_learning_rate():
    cfg = TrainConfig(outer_steps=101, outer_lr=1e-3, outer_lr_min=1e-5)
    assert cfg.outer_lr_at(1) == pytest.approx(1e-3)
    assert cfg.outer_lr_at(51) == pytest.approx(0.5 * (1e-3 + 1e-5))
    assert cfg.outer_lr_at(101) == pytest.approx(1e-5)
    assert TrainConfig(outer_lr=1e-3).outer_lr_at(50) == 1e-3
    with pytest.raises(ValueError, match="outer_lr_min"):
        TrainConfig(outer_lr=1e-3, outer_lr_min=1e-2)


def _train(images, out, *extra: str) -> int:
    args = [
        "train",
        "--no-progress",
        "--method=educated",
        f"--data={images}",
        "--width=4",
        "--depth=2",
        "--patch=16",
        "--steps=2",
        "--meta-batch=3",
        "--val-patches=1",
        "--val-every=4",
        "--ckpt-every=2",
        "--plot-steps=2",
        "--val-fraction=0.25",
        "--sigma=10,40",
        "--mono-fraction=0.5",
        "--threads=1",
        f"--out={out}",
    ]
    return main(args + list(extra))


def test_pretraining_writes_a_loadable_init_and_resumes_exactly(images, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert _train(images, straight, "--outer-steps=6") == 0
    assert _train(images, split, "--outer-steps=4") == 0
    assert _train(images, split, "--outer-steps=6", "--resume") == 0
    a = MetaInit.load(straight / "init.safetensors")
    b = MetaInit.load(split / "init.safetensors")
    for k in a.weights:
        torch.testing.assert_close(a.weights[k], b.weights[k], rtol=0, atol=0)
    assert a.config.guided and a.config.residual and a.config.noise_level
    assert a.rule == "adam" and a.steps == 2
    assert math.isclose(float(a.log_lr.exp()[0, 0]), 1e-4, rel_tol=1e-6)
    assert a.metadata["source"] == "metadip train --method educated"
    recs = [json.loads(s) for s in (straight / "log.jsonl").read_text().splitlines()]
    vals = [r for r in recs if "val_pretrained" in r]
    assert [r["step"] for r in vals] == [0, 4, 6]
    assert (straight / "convergence.png").is_file()
    # The init reconstructs colour and gray images.
    x = torch.rand(3, 16, 16)
    assert reconstruct(x, Denoise((3, 16, 16), 0.1), init=a).image.shape == (3, 16, 16)
    assert reconstruct(x[:1], Denoise((1, 16, 16), 0.1), init=a).image.shape == (1, 16, 16)


def test_pretraining_lowers_the_training_loss(images, tmp_path):
    out = tmp_path / "run"
    assert _train(images, out, "--outer-steps=200", "--outer-lr=3e-3", "--val-every=200") == 0
    recs = [json.loads(s) for s in (out / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in recs if "loss" in r]
    assert len(losses) == 2 and losses[1] < 0.7 * losses[0]


@pytest.mark.parametrize("loss", ["l2", "l1"])
def test_pretrain_step_is_one_clipped_adam_step_and_skips_a_non_finite_batch(loss):
    init = guided_init().to(dtype=F64)
    net = build_network(init.config).to(F64)
    net.load_state_dict(init.weights)
    g = torch.Generator().manual_seed(0)
    guide, x = torch.rand(2, 4, 16, 16, generator=g, dtype=F64), torch.rand(2, 3, 16, 16, dtype=F64)
    twin = build_network(init.config).to(F64)
    twin.load_state_dict(net.state_dict())
    opt, twin_opt = (torch.optim.Adam(m.parameters(), lr=1e-3) for m in (net, twin))
    value, norm = pretrain_step(net, opt, guide, x, loss, clip=1e-3)
    # The same step written out: loss, backward, clipping, Adam.
    diff = twin(guide) - x
    want = diff.pow(2).mean() if loss == "l2" else diff.abs().mean()
    want.backward()
    want_norm = torch.nn.utils.clip_grad_norm_(twin.parameters(), 1e-3)
    twin_opt.step()
    assert value == pytest.approx(want.item()) and norm == pytest.approx(want_norm.item())
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, twin.state_dict()[k], rtol=0, atol=1e-15)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    value, _ = pretrain_step(net, opt, guide, x * math.nan, loss, clip=1e-3)
    assert math.isnan(value)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_inpainting_pretraining_adds_the_mask_channel(images, tmp_path):
    out = tmp_path / "inpaint"
    assert _train(images, out, "--outer-steps=2", "--tasks=inpaint", "--ratio=0.3,0.7") == 0
    init = MetaInit.load(out / "init.safetensors")
    assert init.config.coverage and init.config.guide_channels == 5
    op = Inpainting((3, 16, 16), ratio=0.5, sigma=0.1, seed=0)
    rec = reconstruct(op.measure(torch.rand(3, 16, 16)), op, init=init)
    assert rec.image.shape == (3, 16, 16) and torch.isfinite(rec.image).all()


def test_tv_guided_pretraining_warm_starts_from_an_adjoint_guided_init(images, tmp_path, capsys):
    first = tmp_path / "adjoint"
    assert _train(images, first, "--outer-steps=2", "--tasks=cs") == 0
    source = MetaInit.load(first / "init.safetensors")
    out = tmp_path / "tv"
    extra = ("--tasks=cs,pr", "--guide=tv", "--guide-iters=3", "--guide-weights=pr=0.3")
    start = f"--init-from={first / 'init.safetensors'}"
    assert _train(images, out, "--outer-steps=1", "--outer-lr=1e-12", start, *extra) == 0
    init = MetaInit.load(out / "init.safetensors")
    assert (init.config.guide, init.config.guide_iters) == ("tv", 3)
    assert replace(init.config, guide="adjoint", guide_iters=50) == source.config
    for k in source.weights:  # one step at a negligible rate: still the source's weights
        torch.testing.assert_close(init.weights[k], source.weights[k], rtol=0, atol=1e-9)
    # Phase retrieval trains on the TV amplitude-flow guide (no adjoint needed).
    op = PhaseRetrieval((3, 16, 16), 0.5, 0.1, seed=0, channelwise=True)
    rec = reconstruct(op.measure(torch.rand(3, 16, 16)), op, init=init)
    assert torch.isfinite(rec.image).all()
    # A network that is not the configured one is refused before any work.
    assert _train(images, tmp_path / "bad", "--outer-steps=1", "--width=8", start, *extra) == 2
    assert "differs from the configured" in capsys.readouterr().err
    with pytest.raises(ValueError, match="guide_weights names tasks not trained"):
        TrainConfig(method="educated", tasks="cs", guide="tv", guide_weights={"pr": 0.3})
    with pytest.raises(ValueError, match="use method 'educated'"):
        TrainConfig(guide="tv")


def _sure_init(steps: int = 3) -> MetaInit:
    init = guided_init(channels=1, steps=steps)
    return replace(init, loss="sure")


def _sure(params, hyper, inp, x, y, op):
    """The step's SURE term for these parameters."""
    apply = lambda i: _apply(params, hyper, i)  # noqa: E731
    channels = hyper.config.out_channels
    probe = draw(hyper.generator, None, y.shape[1:], y)
    return sure_term(apply, inp, x, sure_weights(op, x), channels, hyper.sure_eps, probe)


def test_sure_divergence_estimate_is_unbiased():
    init = _sure_init()
    op = Denoise((1, 8, 8), 0.1)
    y = torch.rand(1, 1, 8, 8, dtype=F64)
    # A head that is not zero, so the network is not the identity.
    weights = {k: v + 0.3 * torch.randn_like(v) for k, v in init.weights.items()}
    init = replace(init, weights=weights)
    params, hyper = prepare(init, op.in_shape, guide=guide_input(init.config, op, y))
    net = lambda yy: output(params, replace(hyper, fixed=guide_input(init.config, op, yy)))  # noqa: E731
    jac = torch.autograd.functional.jacobian(net, y).reshape(64, 64)
    exact = float(jac.diagonal().sum())
    inp = _net_input(hyper, jitter=False)
    x = net(y)
    sigma2 = 0.1**2
    draws = [
        (float(_sure(params, hyper, inp, x, y, op)) + sigma2) * 64 / (2 * sigma2)
        for _ in range(400)
    ]
    assert abs(np.mean(draws) - exact) < 0.1 * abs(exact) + 0.5


def test_sure_weights_prepared_once_equal_the_per_step_ones():
    # prepare(problem=...) computes the mask and σ² once; a step without them (a Hyper
    # built by hand) computes them from the operator and must take the same step.
    init = _sure_init()
    op = Inpainting((1, 8, 8), ratio=0.5, sigma=0.1, seed=1).to(dtype=F64)
    y = op.forward(torch.rand(1, 8, 8, dtype=F64))[None]
    guide = guide_input(init.config, op, y)
    params, hyper = prepare(init, op.in_shape, guide=guide, problem=(op, y), seed=3)
    mask, sigma2 = hyper.sure
    torch.testing.assert_close(mask, op.mask.expand(1, 1, 8, 8).to(F64))
    torch.testing.assert_close(sigma2, torch.tensor([0.01], dtype=F64))
    _, bare = prepare(init, op.in_shape, guide=guide, seed=3)
    assert bare.sure is None
    state = init_state(params, hyper)
    a, _, _ = step(params, state, y, op, hyper, 0)
    b, _, _ = step(params, state, y, op, bare, 0)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_sure_is_the_true_error_for_the_identity():
    # Zero head: f(y) = y, so SURE = σ² (the error of returning y), whatever the probe.
    init = _sure_init()
    op = Denoise((1, 16, 16), 0.2)
    y = torch.rand(1, 1, 16, 16, dtype=F64)
    params, hyper = prepare(init, op.in_shape, guide=guide_input(init.config, op, y))
    inp = _net_input(hyper, jitter=False)
    x = output(params, hyper)
    torch.testing.assert_close(x, y)
    probe = torch.randn((1, 1, 16, 16), generator=torch.Generator().manual_seed(0), dtype=F64)
    hyper.generator = torch.Generator().manual_seed(0)
    value = float(_sure(params, hyper, inp, x, y, op))
    assert value == pytest.approx(-0.04 + 2 * 0.04 * float(probe.pow(2).mean()), rel=1e-6)


def _masked_sure_setup(head: float):
    init = MetaInit.random(
        1,
        width=6,
        depth=2,
        steps=3,
        rule="adam",
        lr=1e-3,
        num_fourier=0,
        dtype=F64,
        network={**GUIDED, "noise_level": True, "coverage": True},
    )
    weights = {k: v + head * torch.randn_like(v) for k, v in init.weights.items()}
    init = replace(init, weights=weights, loss="sure")
    op = Inpainting((1, 8, 8), ratio=0.5, sigma=0.1, seed=3).to(dtype=F64)
    y = op.measure(torch.rand(1, 1, 8, 8, dtype=F64), torch.Generator().manual_seed(1))
    params, hyper = prepare(init, op.in_shape, guide=guide_input(init.config, op, y))
    return init, op, y, params, hyper


def test_masked_sure_divergence_is_unbiased_on_the_observed_pixels():
    init, op, y, params, hyper = _masked_sure_setup(head=0.3)
    net = lambda yy: output(params, replace(hyper, fixed=guide_input(init.config, op, yy)))  # noqa: E731
    jac = torch.autograd.functional.jacobian(net, y).reshape(64, 64)
    observed = op.mask.flatten().bool()
    exact = float(jac.diagonal()[observed].sum())
    inp, x = _net_input(hyper, jitter=False), net(y)
    sigma2, n_obs = 0.1**2, float(op.mask.sum())
    draws = [
        (float(_sure(params, hyper, inp, x, y, op)) * 64 + sigma2 * n_obs) / (2 * sigma2)
        for _ in range(400)
    ]
    assert abs(np.mean(draws) - exact) < 0.1 * abs(exact) + 0.5


def test_masked_sure_of_the_identity_is_the_error_on_the_observed_pixels():
    # Zero head: f(y) = M y = y, whose error on the observed pixels is σ² |M| / n.
    _, op, y, params, hyper = _masked_sure_setup(head=0.0)
    inp, x = _net_input(hyper, jitter=False), output(params, hyper)
    torch.testing.assert_close(x, y)
    hyper.generator = torch.Generator().manual_seed(0)
    probe = torch.randn((1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=F64)
    value = float(_sure(params, hyper, inp, x, y, op))
    m = op.mask
    expected = (-0.01 * float(m.sum()) + 2 * 0.01 * float((probe * m).pow(2).sum())) / 64
    assert value == pytest.approx(expected, rel=1e-6)


def test_sure_needs_denoising_and_an_image_input():
    with pytest.raises(ValueError, match="zero divergence"):
        replace(MetaInit.random(1, width=4, depth=2), loss="sure")
    op = CompressiveSensing((1, 16, 16), ratio=0.5, sigma=0.1, seed=0)
    with pytest.raises(ValueError, match="needs a denoising or inpainting operator"):
        reconstruct(torch.rand(*op.out_shape), op, init=_sure_init())
    with pytest.raises(ValueError, match="sigma > 0"):
        reconstruct(torch.rand(1, 16, 16), Denoise((1, 16, 16), 0.0), init=_sure_init())
    with pytest.raises(ValueError, match="denoising and inpainting tasks only"):
        TrainConfig(method="educated", tasks="cs", inner_loss="sure")
    assert TrainConfig(method="educated", tasks="inpaint", inner_loss="sure").tasks == {
        "inpaint": 1.0
    }


def test_sure_fit_reports_the_data_fit_and_batches_exactly(tmp_path):
    init = _sure_init(steps=4)
    path = init.save(tmp_path / "s.safetensors")
    assert MetaInit.load(path).loss == "sure"
    op = Denoise((1, 16, 16), 0.1)
    y = torch.rand(2, 1, 16, 16, dtype=F64)
    one = reconstruct(y[1], op, init=init, dtype=F64, seed=3)
    both = reconstruct(y, op, init=init, dtype=F64, seed=3)
    torch.testing.assert_close(both.image[1], one.image)
    assert all(v >= 0 for v in one.losses) and one.restored == []


def test_zero_steps_return_the_pretrained_map_unfitted():
    init = guided_init(steps=3)
    weights = {k: v + 0.2 * torch.randn_like(v) for k, v in init.weights.items()}
    init = replace(init, weights=weights)
    op = Denoise((3, 8, 8), 0.1)
    y = torch.rand(2, 3, 8, 8, dtype=F64)
    rec = reconstruct(y, op, init=init, steps=0, dtype=F64, x_true=y.clamp(0, 1))
    params, hyper = prepare(init, op.in_shape, batch=2, guide=guide_input(init.config, op, y))
    torch.testing.assert_close(rec.image, output(params, hyper))
    assert rec.steps == 0 and rec.losses == [[], []] and rec.psnr == [[], []]
    assert not torch.equal(rec.image, reconstruct(y, op, init=init, steps=1, dtype=F64).image)
    with pytest.raises(ValueError, match="pass steps >= 1"):
        reconstruct(y, op, init=init, steps=0, samples=2)
    with pytest.raises(ValueError, match="integer >= 0"):
        reconstruct(y, op, init=init, steps=-1)
