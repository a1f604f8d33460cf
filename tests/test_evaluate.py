"""metadip eval: task parsing, one tiny end-to-end run (results, table, plots), resume,
failing methods recorded in their cells."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from metadip import evaluate, io
from metadip.cli import main
from metadip.init import MetaInit
from metadip.metrics import psnr
from metadip.shipped import TASK_DEFAULTS

GRID = {"strength": (15.0, 40.0), "rho": (0.5,), "iters": (2, 4)}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three 48×48 photo crops: a train/validation split of 2 / 1 files."""
    folder = tmp_path_factory.mktemp("images")
    for name in ("astronaut", "coffee", "chelsea"):
        io.save_image(folder / f"{name}.png", io.bundled_patch(name, 48))
    return folder


@pytest.fixture(scope="module")
def tiny_init(tmp_path_factory):
    path = tmp_path_factory.mktemp("init") / "tiny.safetensors"
    MetaInit.random(3, width=8, depth=2, steps=4, num_fourier=2, seed=0).save(path)
    return path


def _cfg(images, out, tiny_init, **kw):
    base = dict(
        tasks=["denoise:25", "cs:0.5"],
        methods=["metadip", "admm-bm3d", "metasiren"],
        images=str(images),
        split="val",
        patches=2,
        size=32,
        out=str(out),
        init=str(tiny_init),
        steps=4,
        tune_size=32,
        denoiser="gaussian",
        grid=GRID,
        progress=False,
    )
    base.update(kw)
    return evaluate.EvalConfig(**base)


def test_parse_task():
    t = evaluate.parse_task("denoise:15")
    assert (t.task, t.sigma) == ("denoise", 15.0)
    t = evaluate.parse_task("pr:0.125")
    assert (t.task, t.ratio, t.sigma) == ("pr", 0.125, 25.0)
    assert evaluate.parse_task("inpaint").ratio == evaluate.INPAINT_RATIO
    box = evaluate.parse_task("inpaint:box")
    mask = box.operator((1, 9, 9), seed=0).mask
    # The centre ninth is missing, every other pixel observed, as the stated ratio says.
    assert mask[3:6, 3:6].sum() == 0 and mask.sum() == 72 and box.ratio == pytest.approx(8 / 9)
    sr = evaluate.parse_task("sr:4")
    assert (sr.factor, sr.operator((3, 8, 8), seed=0).out_shape) == (4, (3, 2, 2))
    assert evaluate.parse_task("sr").factor == evaluate.SR_FACTOR
    for bad in ("denoise", "cs:2", "cs:abc", "sr:1", "sr:2.5", "blur:3"):
        with pytest.raises(ValueError, match="task"):
            evaluate.parse_task(bad)


def test_same_measurement_for_every_method(images):
    (name, x), *_ = evaluate.load_patches(images, 1, 32)
    spec = evaluate.parse_task("cs:0.5")
    seed = evaluate.cell_seed(name, spec.spec)
    y1 = spec.operator(x.shape, seed).measure(x, torch.Generator().manual_seed(seed))
    y2 = spec.operator(x.shape, seed).measure(x, torch.Generator().manual_seed(seed))
    assert torch.equal(y1, y2)
    assert evaluate.cell_seed(name, "cs:0.25") != seed


def test_educated_and_decoder_methods(images, tiny_init, tmp_path, monkeypatch):
    # Patches of 32x32: the decoder's 6 layers need sides that are multiples of 32.
    cfg = _cfg(images, tmp_path, tiny_init, methods=["educated", "decoder"], patches=1)
    rows = {(r["task"], r["method"]): r for r in evaluate.run_eval(cfg, log=lambda _: None)}
    edu = rows[("denoise:25", "educated")]
    assert edu["status"] == "ok" and edu["steps"] == 4 and "denoise" in edu["init"]
    # The shipped Educated-DIP init denoises: better than its noisy input after 4 steps.
    assert edu["psnr"] > edu["psnr_input"] + 3
    # CS has its own shipped Educated-DIP init (the denoiser on a TV warm start).
    cs = rows[("cs:0.5", "educated")]
    assert cs["status"] == "ok" and "cs" in cs["init"]
    # Inpainting too, and phase retrieval (a TV amplitude-flow start: no adjoint needed).
    cfg = _cfg(
        images,
        tmp_path / "i",
        tiny_init,
        tasks=["inpaint", "pr:0.5"],
        methods=["educated"],
        patches=1,
    )
    inp, pr = evaluate.run_eval(cfg, log=lambda _: None)
    assert inp["status"] == "ok" and "inpaint" in inp["init"]
    assert pr["status"] == "ok" and "'pr'" in pr["init"]
    # A task with no shipped Educated-DIP init is skipped with a way out.
    monkeypatch.delitem(TASK_DEFAULTS, "pr")
    cfg = _cfg(images, tmp_path / "p", tiny_init, tasks=["pr:0.5"], methods=["educated"], patches=1)
    (pr,) = evaluate.run_eval(cfg, log=lambda _: None)
    assert pr["task"] == "pr:0.5" and pr["status"] == "skipped"
    assert "--educated-init" in pr["reason"]
    dec = rows[("denoise:25", "decoder")]
    assert dec["status"] == "ok" and dec["steps"] == 1000 and dec["init"] == "decoder"


def test_classical_methods(images, tiny_init, tmp_path):
    path = tmp_path / "classical.safetensors"
    network = {"solver": "gd", "solver_iters": 2, "solver_step": 0.5}
    MetaInit.random(
        3, width=8, depth=2, steps=4, kind="siren", num_fourier=0, network=network
    ).save(path)
    methods = ["meta-classical", "solver", "solver-converged"]
    cfg = _cfg(
        images,
        tmp_path,
        tiny_init,
        tasks=["inpaint"],
        methods=methods,
        patches=1,
        classical_init=str(path),
        converged_iters=50,
    )
    rows = {r["method"]: r for r in evaluate.run_eval(cfg, log=lambda _: None)}
    assert all(rows[m]["status"] == "ok" for m in methods), rows
    assert rows["meta-classical"]["steps"] == 4
    assert (rows["solver"]["steps"], rows["solver-converged"]["steps"]) == (2, 50)
    # Gradient steps on the data term from Aᵀy only move the observed pixels toward y.
    assert rows["solver-converged"]["psnr"] >= rows["solver"]["psnr"] - 1e-6
    missing = _cfg(
        images, tmp_path / "m", tiny_init, tasks=["inpaint"], methods=methods[:1], patches=1
    )
    (row,) = evaluate.run_eval(missing, log=lambda _: None)
    assert row["status"] == "error" and "--classical-init" in row["error"]


def test_samples_give_the_posterior_mean_and_a_std_panel(images, tiny_init, tmp_path):
    single = _cfg(images, tmp_path, tiny_init, tasks=["denoise:25"], methods=["metadip"], patches=1)
    (one,) = evaluate.run_eval(single, log=lambda _: None)
    with Image.open(tmp_path / "grid_denoise_25.png") as im:
        width_one = im.size[0]
    posterior = _cfg(
        images,
        tmp_path,
        tiny_init,
        tasks=["denoise:25"],
        methods=["metadip"],
        patches=1,
        samples=3,
    )
    # The same folder: cells with another number of chains are other cells.
    (row,) = evaluate.run_eval(posterior, log=lambda _: None)
    assert one["samples"] == 1 and "std_white" not in one
    assert row["status"] == "ok" and row["samples"] == 3 and row["std_white"] > 0
    folder = tmp_path / "images" / "denoise_25"
    mean, truth = (io.load_image(folder / f"val00_{k}.png") for k in ("metadip_k3", "truth"))
    assert row["psnr"] == pytest.approx(psnr(mean, truth), abs=0.05)
    assert io.load_image(folder / "val00_metadip_k3_std.png").max() == pytest.approx(1, abs=1e-2)
    with Image.open(tmp_path / "grid_denoise_25.png") as im:
        assert im.size[0] > width_one  # the std panel
    assert "posterior mean of 3 Langevin chains" in (tmp_path / "table.md").read_text()
    assert len(evaluate.read_rows(tmp_path / "results.jsonl")) == 2
    with pytest.raises(ValueError, match="samples"):
        evaluate.run_eval(_cfg(images, tmp_path, tiny_init, samples=0), log=lambda _: None)


def test_a_users_folder_is_evaluated_whole_one_image_included(tmp_path, tiny_init):
    folder = tmp_path / "mine"
    io.save_image(folder / "only.png", io.bundled_patch("coffee", 40))
    cfg = evaluate.EvalConfig(
        tasks=["denoise:25"],
        methods=["metadip"],
        images=str(folder),
        size=32,
        out=str(tmp_path / "ev"),
        init=str(tiny_init),
        steps=2,
        progress=False,
    )
    assert (
        cfg.resolved_split == "all"
        and evaluate.EvalConfig(images="natural").resolved_split == "val"
    )
    (row,) = evaluate.run_eval(cfg, log=lambda _: None)
    assert row["patch"] == "only" and row["status"] == "ok"
    truth = io.load_image(tmp_path / "ev" / "images" / "denoise_25" / "only_truth.png")
    torch.testing.assert_close(
        truth, io.bundled_patch("coffee", 40)[:, 4:36, 4:36], atol=1 / 255, rtol=0
    )
    assert "1 image(s) of" in (tmp_path / "ev" / "table.md").read_text()
    # The project's split is an explicit option, and needs two files.
    with pytest.raises(ValueError, match="at least 2 images"):
        evaluate.load_patches(folder, 1, 32, split="val")
    with pytest.raises(ValueError, match="only.png is 40x40, smaller than --size 64"):
        evaluate.load_patches(folder, None, 64, split="all")
    io.save_image(folder / "second.png", io.bundled_patch("rocket", 48))
    assert [n for n, _ in evaluate.load_patches(folder, None, 32, split="all")] == [
        "only",
        "second",
    ]
    assert [n for n, _ in evaluate.load_patches(folder, 1, 32, split="all")] == ["only"]


def test_run_writes_results_table_plots_and_resumes(images, tiny_init, tmp_path, monkeypatch):
    cfg = _cfg(images, tmp_path, tiny_init)
    logs: list[str] = []
    rows = evaluate.run_eval(cfg, log=logs.append)
    assert len(rows) == 2 * 2 * 3
    by = {(r["patch"], r["task"], r["method"]): r for r in rows}
    for patch in ("val00", "val01"):
        ok = by[(patch, "denoise:25", "metadip")]
        assert ok["status"] == "ok" and ok["steps"] == 4
        assert 0 < ok["ssim"] <= 1 and ok["seconds"] >= 0
        assert [s for s, _ in ok["curve"]] == [1, 2, 3, 4]
        # The recorded PSNR is the final image's: the last point of its own curve.
        assert ok["psnr"] == pytest.approx(ok["curve"][-1][1], abs=1e-6)
        assert ok["versions"]["torch"] == torch.__version__ and ok["device"].startswith("cpu")
        # PnP-ADMM beats the back-projection it starts from on the tiny CS problem
        admm = by[(patch, "cs:0.5", "admm-bm3d")]
        assert admm["status"] == "ok" and admm["psnr"] > admm["psnr_input"]
        assert admm["admm"]["iters"] in GRID["iters"]
        assert by[(patch, "denoise:25", "admm-bm3d")]["status"] == "skipped"
        # a failing method records its error in its cell and the run goes on
        bad = by[(patch, "cs:0.5", "metasiren")]
        assert bad["status"] == "error" and "--siren-init" in bad["error"]
    tuning = json.loads((tmp_path / "admm_tuning.json").read_text())
    (entry,) = tuning.values()
    assert len(entry["cells"]) == 4 and entry["task"] == "cs:0.5"

    table = (tmp_path / "table.md").read_text()
    mean = sum(by[(p, "denoise:25", "metadip")]["psnr"] for p in ("val00", "val01")) / 2
    assert f"{mean:.2f}" in table
    assert "2 validation patch(es) of 32×32" in table
    assert "| admm-bm3d | — | — |" in table and "error" in table and "--siren-init" in table
    for name in ("convergence.png", "grid_denoise_25.png", "grid_cs_0p5.png"):
        with Image.open(tmp_path / name) as im:
            im.load()
            assert im.size[0] > 32 and im.size[1] > 32

    # Resume: finished cells are not run again; the failed ones are retried.
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    calls = []
    real = evaluate.Runner.run

    def counting(self, method, *a):
        calls.append(method)
        return real(self, method, *a)

    monkeypatch.setattr(evaluate.Runner, "run", counting)
    evaluate.run_eval(cfg, log=logs.append)
    assert calls == ["metasiren"] * 4  # 2 patches x 2 tasks
    after = (tmp_path / "results.jsonl").read_text().splitlines()
    assert after[: len(lines)] == lines and len(after) == len(lines) + 4
    assert any("resuming: 8 finished" in m for m in logs)


def test_missing_default_init_is_recorded(images, tmp_path, monkeypatch):
    monkeypatch.setattr(
        "metadip.shipped.default_init_path",
        lambda task=None, channels=None, linear=False: tmp_path / "nowhere" / "default.safetensors",
    )
    cfg = _cfg(images, tmp_path, "default", methods=["metadip"], tasks=["denoise:25"], patches=1)
    (row,) = evaluate.run_eval(cfg, log=lambda m: None)
    assert row["status"] == "error" and "default initialization" in row["error"]
    assert "error" in (tmp_path / "table.md").read_text()


def test_cli_eval_and_report_only(images, tiny_init, tmp_path, capsys):
    args = [
        "eval",
        "--tasks",
        "denoise:25",
        "--methods",
        "metadip,deepinv-dip",
        "--images",
        str(images),
        "--patches",
        "1",
        "--size",
        "32",
        "--init",
        str(tiny_init),
        "--steps",
        "3",
        "--out",
        str(tmp_path),
        "--no-progress",
    ]
    assert main(args) == 0
    rows = evaluate.read_rows(tmp_path / "results.jsonl")
    status = {r["method"]: r["status"] for r in rows}
    try:
        import deepinv  # noqa: F401

        assert status["deepinv-dip"] == "ok"
    except ImportError:
        assert status["deepinv-dip"] == "skipped"
        assert "deepinv is not installed" in capsys.readouterr().err
    assert status["metadip"] == "ok"
    (tmp_path / "table.md").unlink()
    assert main([*args, "--report-only"]) == 0
    assert "| metadip |" in (tmp_path / "table.md").read_text()
    assert len(evaluate.read_rows(tmp_path / "results.jsonl")) == 2
    assert main([*args[:2], "nope:1", *args[3:]]) == 2
    assert main([*args, "--converged-iters", "0"]) == 2
    assert "--converged-iters must be >= 1, got 0" in capsys.readouterr().err


def test_plot_convergence_pillow(tmp_path):
    rows = [
        {"task": "cs:0.25", "method": "dip1000", "curve": [[1, 10.0], [10, 20.0], [1000, 28.0]]},
        {"task": "cs:0.25", "method": "metadip", "curve": [[1, 18.0], [50, 27.5]]},
        {"task": "denoise:25", "method": "metadip", "curve": [[1, 20.0], [50, 29.0]]},
    ]
    path = evaluate.plot_convergence(rows, tmp_path / "c.png")
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB")).reshape(-1, 3)
        colours = {tuple(int(v) for v in px) for px in a}
    assert evaluate.COLORS["dip1000"] in colours and evaluate.COLORS["metadip"] in colours
    assert evaluate.plot_convergence([{"task": "x", "method": "bm3d"}], tmp_path / "n.png") is None


def test_truncated_results_line_is_ignored(tmp_path):
    good = {"patch": "val00", "task": "denoise:25", "method": "bm3d", "size": 32, "status": "ok"}
    newer = dict(good, status="error")
    (tmp_path / "r.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(newer) + '\n{"pat')
    (row,) = evaluate.read_rows(tmp_path / "r.jsonl")
    assert row["status"] == "error"  # the later row for a cell wins
