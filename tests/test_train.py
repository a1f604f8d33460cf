"""``metadip train``: options, outputs, resume after a kill, Ctrl-C."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metadip.api import reconstruct
from metadip.cli import build_parser, main
from metadip.init import MetaInit
from metadip.operators import Denoise
from metadip.tasks import make_operator
from metadip.train import TrainConfig, config_from_args, log_points, plot_curves
from metadip.train.common import split_images

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """A folder of smooth random photographs (fast to load, non-flat)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(5):
        coarse = rng.random((6, 6, 3))
        big = np.kron(coarse, np.ones((8, 8, 1)))
        a = (255 * (0.7 * big + 0.3 * rng.random((48, 48, 3)))).astype(np.uint8)
        Image.fromarray(a).save(folder / f"p{i}.png")
    return folder


def _args(images: Path, out: Path, **kw) -> list[str]:
    opts = {
        "data": str(images),
        "channels": 1,
        "width": 4,
        "depth": 2,
        "num-fourier": 2,
        "patch": 16,
        "steps": 2,
        "meta-batch": 1,
        "val-patches": 1,
        "val-every": 2,
        "ckpt-every": 2,
        "plot-steps": 3,
        "val-fraction": 0.2,
        "threads": 1,
        "out": str(out),
    }
    opts.update({k.replace("_", "-"): v for k, v in kw.items()})
    return ["train", "--no-progress"] + [f"--{k}={v}" for k, v in opts.items()]


def _records(out: Path) -> list[dict]:
    return [json.loads(s) for s in (out / "log.jsonl").read_text().splitlines() if s]


def test_the_validation_split_does_not_move_with_the_training_seed(tmp_path):
    """Runs of other seeds hold out the same photos (with the split tied to ``seed``, a
    seed-2 run trained on most of seed 0's validation photos); ``split_seed`` moves it."""
    rng = np.random.default_rng(1)
    for i in range(20):
        Image.fromarray((255 * rng.random((16, 16, 3))).astype(np.uint8)).save(
            tmp_path / f"q{i:02d}.png"
        )
    split = {}
    for seed, split_seed in [(0, 0), (2, 0), (3, 0), (0, 5)]:
        cfg = TrainConfig(data=str(tmp_path), val_fraction=0.2, seed=seed, split_seed=split_seed)
        train, val = split_images(cfg)
        assert len(val) == 4 and not set(train) & set(val) and len(train) + len(val) == 20
        split[seed, split_seed] = sorted(val)
    assert split[0, 0] == split[2, 0] == split[3, 0]
    assert split[0, 5] != split[0, 0]


def test_toml_sections_and_command_line_precedence(tmp_path):
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(
        "[network]\nwidth = 7\ndepth = 3\n[inner]\nsteps = 6\n[data]\ntasks = { denoise = 1.0, "
        "cs = 0.5 }\nsigma = [15, 35]\n[outer]\nouter_lr = 0.01\n"
    )
    args = build_parser().parse_args(["train", "--config", str(cfg_file), "--width", "9"])
    cfg = config_from_args(args)
    assert (cfg.width, cfg.depth, cfg.steps, cfg.outer_lr) == (9, 3, 6, 0.01)
    assert cfg.tasks == {"denoise": 1.0, "cs": 0.5} and cfg.sigma == [15.0, 35.0]
    assert cfg.meta_batch == TrainConfig().meta_batch
    args = build_parser().parse_args(["train", "--tasks", "denoise=2,pr", "--sigma", "25"])
    cfg = config_from_args(args)
    assert cfg.tasks == {"denoise": 2.0, "pr": 1.0} and cfg.sigma == [25.0, 25.0]


def test_bad_options_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown training option\(s\) \['widht'\]"):
        TrainConfig.from_dict({"widht": 3})
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="mode must be one of"):
        TrainConfig(mode="exact")
    with pytest.raises(ValueError, match="unknown training task"):
        TrainConfig(tasks="deblur")
    with pytest.raises(ValueError, match="NAME=PROBABILITY"):
        TrainConfig(tasks="denoise=high")
    with pytest.raises(ValueError, match="not all 0"):
        TrainConfig(tasks={"cs": -1.0, "pr": 2.0})
    assert TrainConfig(tasks="denoise=1,cs=0.5").tasks == {"denoise": 1.0, "cs": 0.5}
    assert TrainConfig(tasks=["pr"]).tasks == {"pr": 1.0}
    with pytest.raises(ValueError, match="range LO,HI"):
        TrainConfig(sigma=[30, 10])
    bad = tmp_path / "bad.toml"
    bad.write_text("width = \n")
    with pytest.raises(ValueError, match="not valid TOML"):
        TrainConfig.from_toml(bad)
    assert main(["train", "--config", str(tmp_path / "missing.toml")]) == 2


def test_short_run_outputs_and_init_loads_in_reconstruct(images, tmp_path):
    out = tmp_path / "run"
    assert main(_args(images, out, outer_steps=4)) == 0
    recs = _records(out)
    assert [r["step"] for r in recs if "loss" in r] == [1, 2, 3, 4]
    vals = [r for r in recs if "val_meta" in r]
    assert [r["step"] for r in vals] == [0, 2, 4]
    assert all(np.isfinite(r["val_meta"]) and np.isfinite(r["val_random"]) for r in vals)
    curves = next(r["curves"] for r in recs if "curves" in r)
    assert len(curves) == 2 and all([n for n, _ in c] == [1, 2, 3] for c in curves.values())
    for plot in ("convergence.png", "validation.png"):
        with Image.open(out / plot) as im:
            assert im.size[0] > 100 and im.size[1] > 100
    init = MetaInit.load(out / "init.safetensors")
    assert init.metadata["outer_step"] == 4 and init.steps == 2
    # The trained init moved away from the untrained one.
    assert main(_args(images, tmp_path / "zero", outer_steps=1, val_every=5)) == 0
    first = MetaInit.load(tmp_path / "zero" / "init.safetensors")
    assert not torch.equal(first.log_lr, init.log_lr)
    x = torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(0))
    op = Denoise(x.shape, 0.1)
    rec = reconstruct(op.measure(x), op, init=out / "init.safetensors")
    assert rec.image.shape == x.shape and rec.steps == 2
    # A second run into the same folder needs --resume.
    assert main(_args(images, out, outer_steps=4)) == 2


def _default_sigint() -> None:
    # A test runner started in the background (no job control) ignores SIGINT, and the
    # child would inherit that; Python installs its KeyboardInterrupt handler only when
    # SIGINT is not ignored at startup.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextmanager
def _spawn(args: list[str]) -> Iterator[subprocess.Popen]:
    """A training subprocess that is killed on the way out, whatever the test did."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "metadip.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_default_sigint,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    start = time.monotonic()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"training exited early: {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() - start > timeout:
            proc.kill()
            raise AssertionError(f"no {path.name} after {timeout} s")
        time.sleep(0.05)


def test_killed_run_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(images, tmp_path):
    out = tmp_path / "killed"
    with _spawn(_args(images, out, outer_steps=10_000)) as proc:
        _wait_for(out / "checkpoint.pt", proc)
        proc.kill()
    saved = torch.load(out / "checkpoint.pt", weights_only=False)["step"]
    assert saved >= 2 and saved % 2 == 0
    # However far the killed run got, the resume has 4 steps left to do.
    target = saved + 4
    ref = tmp_path / "ref"
    assert main(_args(images, ref, outer_steps=target)) == 0

    assert main([*_args(images, out, outer_steps=target), "--resume"]) == 0
    recs = _records(out)
    steps = [r["step"] for r in recs if "loss" in r]
    assert steps == list(range(1, target + 1)), "lost work re-done exactly once, nothing duplicated"
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == target
    # Optimizer, data RNG and meta-parameters were restored: same result as never stopping.
    losses = {r["step"]: r["loss"] for r in recs if "loss" in r}
    ref_losses = {r["step"]: r["loss"] for r in _records(ref) if "loss" in r}
    assert losses == ref_losses
    a = MetaInit.load(out / "init.safetensors").tensors()
    b = MetaInit.load(ref / "init.safetensors").tensors()
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_resume_rejects_changed_options(images, tmp_path):
    out = tmp_path / "run"
    assert main(_args(images, out, outer_steps=2)) == 0
    assert main([*_args(images, out, outer_steps=4, width=5), "--resume"]) == 2
    assert main([*_args(images, tmp_path / "none", outer_steps=2), "--resume"]) == 2


@pytest.mark.parametrize("method", ["maml", "educated"])
def test_resuming_a_finished_run_changes_nothing(images, tmp_path, capsys, method):
    out = tmp_path / method
    args = _args(images, out, outer_steps=2, method=method)
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    assert "already trained to outer step 2 of 2" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_ctrl_c_or_kill_saves_a_checkpoint(images, tmp_path, sig):
    out = tmp_path / "interrupted"
    with _spawn(_args(images, out, outer_steps=10_000, ckpt_every=1000)) as proc:
        _wait_for(out / "log.jsonl", proc)
        deadline = time.monotonic() + 120
        while not any("loss" in r for r in _records(out)) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(sig)
        assert proc.wait(timeout=120) == 130
    step = torch.load(out / "checkpoint.pt", weights_only=False)["step"]
    logged = max(r["step"] for r in _records(out) if "loss" in r)
    assert step >= 1 and logged - step <= 1  # at most the step in flight is lost


def test_init_from_warm_starts_with_a_new_horizon(images, tmp_path, capsys):
    # A start whose weights come from another seed than the run's, so they are recognisable.
    path = tmp_path / "start.safetensors"
    start = MetaInit.random(1, width=4, depth=2, num_fourier=2, steps=2, seed=5, lr=0.3)
    start.save(path)
    out = tmp_path / "warm"
    assert main([*_args(images, out, outer_steps=1, steps=4), "--init-from", str(path)]) == 0
    warm = MetaInit.load(out / "init.safetensors")
    assert warm.steps == 4
    assert torch.equal(warm.fourier_basis, start.fourier_basis)
    fresh = MetaInit.random(1, width=4, depth=2, num_fourier=2, steps=2, seed=0)
    for k, w in warm.weights.items():
        moved = (w - start.weights[k]).abs().max()
        assert moved <= 2e-3  # one Adam step of lr 1e-3 from the start's weights
        if w.dim() > 1:  # conv kernels differ between seeds (norm scales are all ones)
            assert moved < (fresh.weights[k] - start.weights[k]).abs().max()
    assert torch.allclose(warm.log_lr[2:], warm.log_lr[1:2].expand(2, -1), atol=0.05)
    bad = _args(images, tmp_path / "bad", outer_steps=1, width=5)
    assert main([*bad, "--init-from", str(path)]) == 2
    assert "differs from the configured" in capsys.readouterr().err


def test_plot_and_log_points(tmp_path):
    assert log_points(12) == [1, 2, 3, 5, 7, 10, 12]
    path = plot_curves(tmp_path / "p.png", {"a": [(1, 10.0), (10, 20.0)], "b": [(1, 12.0)]})
    with Image.open(path) as im:
        assert im.mode == "RGB"
    with pytest.raises(ValueError, match="non-empty"):
        plot_curves(tmp_path / "q.png", {"a": []})


def test_siren_network_trains_a_metasiren_init(images, tmp_path, capsys):
    out = tmp_path / "siren"
    args = _args(images, out, outer_steps=2, network="siren", width=8, depth=2, inner_lr=0.01)
    assert main(args) == 0
    init = MetaInit.load(out / "init.safetensors")
    assert init.config.kind == "siren" and init.metadata["outer_step"] == 2
    x = torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(0))
    op = Denoise(x.shape, 0.1)
    rec = reconstruct(op.measure(x), op, init=out / "init.safetensors")
    assert rec.image.shape == x.shape and torch.isfinite(rec.image).all()
    assert main(_args(images, tmp_path / "bad", network="unet")) == 2
    assert "network must be one of ('skip', 'siren', 'decoder')" in capsys.readouterr().err


@pytest.mark.parametrize(
    "task, solver",
    [
        ("inpaint", {"solver": "gd", "solver_iters": 2, "solver_step": 0.5}),
        # RED with the shipped DnCNN, on the deblurring task.
        ("blur", {"solver": "red", "solver_iters": 1, "solver_step": 0.5, "solver_weight": 1.0}),
    ],
)
def test_classical_solver_init_meta_trains_and_reconstructs(images, tmp_path, task, solver):
    out = tmp_path / "classical"
    args = _args(
        images,
        out,
        outer_steps=2,
        network="siren",
        width=8,
        depth=2,
        inner_lr=0.01,
        tasks=task,
        **solver,
    )
    assert main(args) == 0
    init = MetaInit.load(out / "init.safetensors")
    assert {k: getattr(init.config, k) for k in solver} == solver
    x = torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(0))
    op = make_operator(task, x.shape, ratio=0.5, seed=1)
    rec = reconstruct(op.forward(x), op, init=out / "init.safetensors")
    assert rec.image.shape == x.shape and torch.isfinite(rec.image).all()


def test_classical_solver_options_are_checked(images, tmp_path, capsys):
    with pytest.raises(ValueError, match="method 'maml'"):
        TrainConfig(method="educated", solver="gd", solver_iters=1)
    assert main(_args(images, tmp_path / "bad", solver="admm")) == 2
    assert "solver must be one of" in capsys.readouterr().err


def test_meta_gradient_clipping_survives_float32_overflow_of_the_norm():
    from metadip.train.maml import clip_meta_gradient

    big = {"a": torch.full((4,), 1e20), "b": torch.full((9,), -1e20)}
    # float32's own norm overflows here, and torch's clipping would zero the step.
    assert not torch.isfinite(torch.linalg.vector_norm(big["a"]))
    clipped, norm = clip_meta_gradient(big, 1.0)
    assert norm == pytest.approx(1e20 * 13**0.5, rel=1e-6)
    total = torch.cat([g.double() for g in clipped.values()]).norm()
    assert float(total) == pytest.approx(1.0, rel=1e-5)
    assert torch.equal(clipped["a"].sign(), big["a"].sign())

    small = {"a": torch.tensor([0.3, -0.4])}
    same, norm = clip_meta_gradient(small, 1.0)
    assert norm == pytest.approx(0.5) and same["a"] is small["a"]
    assert clip_meta_gradient(big, 0.0)[0]["a"] is big["a"]  # 0: unclipped

    bad = {"a": torch.tensor([1.0, float("inf")])}
    assert not math.isfinite(clip_meta_gradient(bad, 1.0)[1])


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parents[1] / "configs").glob("*.toml")), ids=lambda p: p.name
)
def test_committed_configs_parse_and_name_existing_inits(path):
    """Every committed training config loads (known keys, valid values), and the init a
    run continues from is a committed file that loads."""
    cfg = TrainConfig.from_toml(path)
    if cfg.init_from:
        init = MetaInit.load(Path(__file__).parents[1] / cfg.init_from)
        assert init.config.width == cfg.width and init.config.depth == cfg.depth
