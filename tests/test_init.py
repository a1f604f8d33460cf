"""Init files: round trip, clear errors for corrupt or mismatched files, name resolution."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from metadip.init import MetaInit, member_record
from metadip.inner import output, prepare
from metadip.shipped import default_init_path, large_init_path, load_init
from tests.conftest import tiny_init


def test_load_leaves_the_global_rng_alone(tmp_path):
    path = MetaInit.random(3, width=8, depth=2).save(tmp_path / "a.safetensors")
    before = torch.random.get_rng_state()
    MetaInit.load(path)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_save_load_round_trip(tmp_path):
    init = tiny_init(3, steps=5)
    init.metadata["note"] = "round trip"
    init = dataclasses.replace(init, jitter=0.01, ema=0.5, z_seed=7)
    path = init.save(tmp_path / "a.safetensors")
    back = MetaInit.load(path)
    assert back.config == init.config and back.rule == init.rule and back.z_seed == 7
    assert back.jitter == 0.01 and back.ema == 0.5 and back.metadata["note"] == "round trip"
    for k, v in init.tensors().items():
        assert torch.equal(back.tensors()[k], v), k
    assert list(back.weights) == list(init.weights)


def test_corrupt_file_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!garbage")
    with pytest.raises(ValueError, match="not a readable"):
        MetaInit.load(path)


def test_truncated_file_is_a_clear_error(tmp_path):
    path = tiny_init().save(tmp_path / "t.safetensors")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="not a readable"):
        MetaInit.load(path)


def test_foreign_safetensors_is_rejected(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="not a metadip init"):
        MetaInit.load(path)


def test_mismatched_weights_are_rejected(tmp_path):
    init = tiny_init()
    key = next(iter(init.weights))
    init.weights[key] = torch.zeros(1, dtype=torch.float64)
    path = init.save(tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="do not match"):
        MetaInit.load(path)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="no init file"):
        MetaInit.load("does/not/exist.safetensors")


def test_shipped_default_loads_with_its_provenance():
    path = default_init_path()
    assert path.is_file() and path.stat().st_size <= 20 * 2**20
    init = load_init("default")
    assert init.config.out_channels == 3 and init.steps == 50 and init.rule == "sgd"
    meta = init.metadata
    for key in ("train_config", "data_manifest_sha256", "outer_steps", "inner_horizon", "device"):
        assert key in meta, key
    assert meta["git_commit"] and meta["val_psnr_curve"]
    # Fully convolutional: the init fits sizes other than its training patches.
    x = torch.rand(1, 3, 40, 56)
    params, hyper = prepare(init, (3, 40, 56))
    assert output(params, hyper).shape == x.shape


def test_missing_default_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setattr(
        "metadip.shipped.default_init_path",
        lambda task=None, channels=None, linear=False: tmp_path / "none.safetensors",
    )
    with pytest.raises(FileNotFoundError, match="init='random'"):
        load_init("default")


def test_random_is_vanilla_dip():
    init = load_init("random", channels=1)
    assert init.rule == "adam" and init.steps == 1000
    assert init.jitter == pytest.approx(1 / 30) and init.ema == 0.99
    assert torch.allclose(init.log_lr.exp(), torch.tensor(0.01))
    with pytest.raises(ValueError, match="channels"):
        load_init("random")


def test_random_is_seeded_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b = (
        MetaInit.random(1, width=4, depth=2, seed=3),
        MetaInit.random(1, width=4, depth=2, seed=3),
    )
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights)
    c = MetaInit.random(1, width=4, depth=2, seed=4)
    assert not all(torch.equal(a.weights[k], c.weights[k]) for k in a.weights)


def test_with_steps_and_to():
    init = tiny_init(steps=3)
    assert init.with_steps(5).steps == 5 and init.with_steps(2).steps == 2
    assert torch.equal(init.with_steps(5).log_lr[4], init.log_lr[2])
    assert init.to(dtype=torch.float32).weights[next(iter(init.weights))].dtype == torch.float32


def test_with_rates_sets_every_parameter_by_the_schedule():
    init = tiny_init(steps=4).to(dtype=torch.float64)
    flat = init.with_rates(0.01)
    assert flat.steps == 4 and torch.allclose(flat.log_lr.exp(), torch.full_like(flat.log_lr, 0.01))
    cos = init.with_rates(0.01, "cosine", steps=8)
    expect = 0.01 * (1 + torch.cos(math.pi * torch.arange(8.0, dtype=torch.float64) / 8)) / 2
    assert cos.steps == 8
    assert torch.allclose(cos.log_lr.exp(), expect.unsqueeze(1).expand_as(cos.log_lr), rtol=1e-12)
    warm = init.with_rates(0.01, steps=6, warmup=3)
    expect = 0.01 * torch.tensor([1 / 3, 2 / 3, 1, 1, 1, 1], dtype=torch.float64)
    assert torch.allclose(warm.log_lr.exp(), expect.unsqueeze(1).expand_as(warm.log_lr), rtol=1e-12)
    assert torch.equal(init.with_rates(0.01, warmup=0).log_lr, flat.log_lr)
    for bad, match in (
        ({"lr": 0.0}, "positive"),
        ({"lr": 1e-3, "schedule": "step"}, "schedule"),
        ({"lr": 1e-3, "warmup": -1}, "warmup"),
        ({"lr": 1e-3, "warmup": 5}, "warmup"),
    ):
        with pytest.raises(ValueError, match=match):
            init.with_rates(**bad)


def test_scaled_rates_multiplies_every_rate_and_refuses_bad_factors():
    init = tiny_init(steps=4).to(dtype=torch.float64)
    init = dataclasses.replace(init, log_lr=torch.randn_like(init.log_lr))
    scaled = init.scaled_rates(2.5)
    assert torch.allclose(scaled.log_lr.exp(), 2.5 * init.log_lr.exp(), rtol=1e-12)
    assert torch.equal(
        scaled.weights[next(iter(init.weights))], init.weights[next(iter(init.weights))]
    )
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="positive finite"):
            init.scaled_rates(bad)


def test_averaged_with_is_the_mean_of_the_weights_and_keeps_the_rest():
    a, b, c = (tiny_init(steps=4, seed=s).to(dtype=torch.float64) for s in (1, 2, 3))
    a = a.with_rates(0.02)
    soup = a.averaged_with(b, c)
    for name, w in a.weights.items():
        want = (w + b.weights[name] + c.weights[name]) / 3
        assert torch.allclose(soup.weights[name], want, rtol=0, atol=1e-15)
    assert torch.equal(soup.log_lr, a.log_lr) and soup.rule == a.rule
    assert soup.metadata == a.metadata
    same = a.averaged_with(a)
    assert all(torch.equal(same.weights[k], a.weights[k]) for k in a.weights)


def test_averaged_with_refuses_other_networks_and_nothing():
    a = tiny_init(seed=1)
    with pytest.raises(ValueError, match="at least one"):
        a.averaged_with()
    with pytest.raises(ValueError, match="init 1 has network"):
        a.averaged_with(tiny_init(seed=1, width=8))
    with pytest.raises(ValueError, match="init 1 has network"):
        a.averaged_with(tiny_init(channels=3, seed=1))


def test_member_record_names_file_hash_step_and_run(tmp_path):
    md = {"outer_step": 1200, "train_config": {"out": "runs/a"}}
    path = dataclasses.replace(tiny_init(), metadata=md).save(tmp_path / "a.safetensors")
    rec = member_record(path, MetaInit.load(path), label="inits/a.safetensors")
    assert rec == {
        "file": "inits/a.safetensors",
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "outer_step": 1200,
        "run": "runs/a",
    }
    bare = tiny_init().save(tmp_path / "b.safetensors")
    rec = member_record(bare, MetaInit.load(bare))
    assert rec["file"] == str(bare) and rec["outer_step"] is None and rec["run"] is None


def test_log_lr_shape_is_validated():
    init = tiny_init()
    with pytest.raises(ValueError, match="log_lr"):
        dataclasses.replace(init, log_lr=torch.zeros(4, 2))


def test_default_resolves_per_operator_task(monkeypatch):
    monkeypatch.setattr("metadip.shipped.TASK_DEFAULTS", {"denoise": "special.safetensors"})
    assert default_init_path("denoise").name == "special.safetensors"
    assert default_init_path("denoise", linear=True).name == "special.safetensors"
    assert default_init_path("cs").name == default_init_path().name == "default.safetensors"
    # A linear operator of a task with no file of its own takes the TV-start file.
    assert default_init_path("custom", 3, linear=True).name == "linear.safetensors"
    assert default_init_path("custom", 1, linear=True).name == "linear.safetensors"


def test_large_init_is_the_denoising_recipe_at_width_128_and_other_tasks_are_refused():
    init = load_init("large", 3, task="denoise")
    assert init.config.width == 128 and init.config.depth == 5
    assert init.config.guided and init.config.residual and init.config.noise_level
    assert init.loss == "sure" and init.rule == "adam" and init.steps == 50
    assert init.metadata["device"] == "cuda" and init.metadata["val_psnr_curve"]
    assert large_init_path("denoise").stat().st_size <= 20 * 2**20
    with pytest.raises(ValueError, match="shipped for task.*denoise.*'cs'"):
        load_init("large", 3, task="cs")
    with pytest.raises(TypeError, match="'large'"):
        load_init(3.0)  # type: ignore[arg-type]


def test_missing_large_init_names_the_file(monkeypatch, tmp_path):
    monkeypatch.setattr("metadip.shipped._weights", lambda name: tmp_path / name)
    with pytest.raises(FileNotFoundError, match="denoise_large.safetensors"):
        load_init("large", 3, task="denoise")


@pytest.mark.parametrize("task", ["denoise", "inpaint"])
def test_shipped_task_default_loads_with_its_provenance(task):
    path = default_init_path(task)
    assert path.is_file() and path.name == f"{task}.safetensors"
    init = load_init("default", task=task)
    assert init.config.guided and init.config.residual and init.config.noise_level
    # Inpainting's network also sees the mask (coverage), so missing pixels are not black.
    assert init.config.coverage == (task == "inpaint")
    # Denoising runs 20 steps by default (width 48, whose fit rises at every step count,
    # within the 3 s CPU budget); inpainting 50.
    assert (init.rule, init.loss) == ("adam", "sure")
    assert init.steps == (20 if task == "denoise" else 50)
    meta = init.metadata
    for key in ("train_config", "data_manifest_sha256", "outer_steps", "fine_tune", "git_commit"):
        assert key in meta, key
    assert meta["train_config"]["method"] == "educated" and meta["val_psnr_curve"]
    assert meta["train_config"]["tasks"] == {task: 1.0}
    tune = meta["fine_tune"]
    schedule = tune.get("schedule", "constant")
    expect = init.with_rates(tune["lr"], schedule, tune["steps"], tune.get("warmup", 0))
    assert torch.allclose(init.log_lr, expect.log_lr)


ROOT = Path(__file__).resolve().parents[1]
# Deblurring reads the denoising default shipped until the 128×128 continuation replaced it
# (configs/educated_denoise.toml, step 18000; same weights).
DENOISER = "benchmarks/results/recipe_study/inits/educated_denoise_step18000.safetensors"
WIDTH32_DENOISER = "benchmarks/results/recipe_study/inits/educated_denoise128_step20000.safetensors"
# CS and PR read the denoiser pretrained further on TV starts (configs/educated_tv.toml, step
# 1000).
EDUCATED_TV = "benchmarks/results/recipe_study/inits/educated_tv_step1000.safetensors"
# Super-resolution reads that network trained further with super-resolution in the mixture
# (configs/educated_tv_sr.toml, step 3000).
EDUCATED_TV_SR = "benchmarks/results/recipe_study/inits/educated_tv_sr_step3000.safetensors"
# Every other linear operator reads that one trained further on CS, deblurring and
# super-resolution at the linear default's TV weight (configs/educated_tv_linear.toml, step
# 2500).
EDUCATED_TV_LINEAR = "benchmarks/results/recipe_study/inits/educated_tv_linear_step2500.safetensors"


@pytest.mark.parametrize(
    ("task", "channels", "name", "weight", "rate_scale", "source"),
    [
        ("cs", 3, "cs", 1.0, 1.0, EDUCATED_TV),
        # Gray CS: the same network at 0.3x the rate (no loss from 50 to 100 steps).
        ("cs", 1, "cs_gray", 1.0, 0.3, EDUCATED_TV),
        ("blur", 3, "blur", 0.3, 0.05, DENOISER),
        ("blur", 1, "blur", 0.3, 0.05, DENOISER),
        ("pr", 3, "pr", 0.3, 0.1, EDUCATED_TV),
        # Gray PR: a tenth of PR's rate (its fit only loses at the full rate).
        ("pr", 1, "pr_gray", 0.3, 0.01, EDUCATED_TV),
        ("sr", 3, "sr", 0.3, 0.03, EDUCATED_TV_SR),
        ("sr", 1, "sr", 0.3, 0.03, EDUCATED_TV_SR),
        # Every other linear operator (a user's own): a heavier TV, which no operator of
        # the study turns into a noise-amplifying start.
        ("custom", 3, "linear", 0.5, 0.1, EDUCATED_TV_LINEAR),
        ("custom", 1, "linear", 0.5, 0.1, EDUCATED_TV_LINEAR),
    ],
)
def test_shipped_tv_started_default_is_a_denoiser_on_a_tv_guide(
    task, channels, name, weight, rate_scale, source
):
    ours = load_init("default", channels=channels, task=task, linear=True)
    # The width-32 denoiser these files were built from (the denoising default before the
    # width-48 one), with its rate, Adam 1e-4 for 50 steps.
    den = MetaInit.load(ROOT / WIDTH32_DENOISER)
    src = MetaInit.load(ROOT / source)
    assert default_init_path(task, channels, linear=True).name == f"{name}.safetensors"
    assert ours.config == dataclasses.replace(
        den.config, guide="tv", guide_iters=50, guide_weight=weight
    )
    # SURE is for denoising: these fits minimize the data term.
    assert (ours.rule, ours.loss, ours.steps) == ("adam", "mse", 50)
    assert ours.weights.keys() == src.weights.keys()
    for k in src.weights:
        assert torch.equal(ours.weights[k], src.weights[k]), k
    torch.testing.assert_close(ours.log_lr, den.log_lr + math.log(rate_scale))
    assert ours.metadata["derived_from"] == source
    assert ours.metadata["shipped_for"] == (task if task != "custom" else "linear")
    assert ours.metadata["rate_scale"] == rate_scale


def test_saved_file_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = tiny_init().save(tmp_path / "shared.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
