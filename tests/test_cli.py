"""The command line: demo and reconstruct end to end on tiny problems, and clear errors."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metadip import io
from metadip.cli import main
from metadip.init import MetaInit
from metadip.metrics import psnr
from tests.conftest import smooth_image, tiny_init
from tests.test_dihedral import _init


@pytest.fixture
def init_file(tmp_path):
    return str(tiny_init(3, steps=2).save(tmp_path / "tiny.safetensors"))


def test_demo_writes_a_grid(tmp_path, init_file, capsys):
    out = tmp_path / "demo.png"
    assert main(["demo", "--init", init_file, "--size", "40", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for task in ("denoise", "cs", "pr"):
        assert task in text
    with Image.open(out) as im:
        assert im.width > 4 * 40 and im.height > 40


@pytest.mark.parametrize("task", ["denoise", "cs", "pr", "inpaint", "blur", "sr"])
def test_reconstruct_simulated(tmp_path, init_file, task, capsys):
    src = tmp_path / "x.png"
    io.save_image(src, smooth_image(3, 24, 24))
    out = tmp_path / "rec.npy"
    assert (
        main(
            [
                "reconstruct",
                str(src),
                "--task",
                task,
                "--simulate",
                "--init",
                init_file,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rec = np.load(out)
    assert rec.shape == (3, 24, 24) and np.isfinite(rec).all()
    # The printed PSNR is that of the written image against the source image.
    printed = float(re.search(r"PSNR (\S+) dB", capsys.readouterr().out).group(1))
    assert printed == pytest.approx(psnr(torch.from_numpy(rec), io.load_image(src)), abs=0.01)


def test_reconstruct_from_measurement_files(tmp_path, init_file):
    noisy = tmp_path / "noisy.png"
    io.save_image(noisy, smooth_image(3, 24, 24))
    assert (
        main(
            [
                "reconstruct",
                str(noisy),
                "--task",
                "denoise",
                "--init",
                init_file,
                "--out",
                str(tmp_path / "d.png"),
            ]
        )
        == 0
    )
    with Image.open(tmp_path / "d.png") as im:
        assert im.size == (24, 24)
    mask = tmp_path / "mask.png"
    io.save_image(mask, (torch.rand(1, 24, 24) > 0.5).float())
    assert (
        main(
            [
                "reconstruct",
                str(noisy),
                "--task",
                "inpaint",
                "--mask",
                str(mask),
                "--init",
                init_file,
                "--out",
                str(tmp_path / "i.npy"),
            ]
        )
        == 0
    )
    from metadip.tasks import make_operator

    op = make_operator("cs", (3, 24, 24), ratio=0.5, seed=3)
    np.save(tmp_path / "y.npy", op.forward(smooth_image(3, 24, 24)).numpy())
    assert (
        main(
            [
                "reconstruct",
                str(tmp_path / "y.npy"),
                "--task",
                "cs",
                "--shape",
                "3,24,24",
                "--ratio",
                "0.5",
                "--seed",
                "3",
                "--init",
                init_file,
                "--out",
                str(tmp_path / "c.npy"),
            ]
        )
        == 0
    )
    assert np.load(tmp_path / "c.npy").shape == (3, 24, 24)


def test_samples_write_a_std_map(tmp_path, init_file, capsys):
    src, out, std = tmp_path / "x.png", tmp_path / "rec.npy", tmp_path / "std.npy"
    io.save_image(src, smooth_image(3, 24, 24))
    args = ["reconstruct", str(src), "--task", "denoise", "--simulate", "--init", init_file]
    assert main([*args, "--out", str(out), "--samples", "3", "--std-out", str(std)]) == 0
    values = np.load(std)
    assert values.shape == (3, 24, 24) and (values >= 0).all() and values.max() > 0
    assert f"std map -> {std}" in capsys.readouterr().out
    demo = tmp_path / "demo.png"
    demo_args = ["--init", init_file, "--size", "40", "--tasks", "denoise", "--samples", "2"]
    assert main(["demo", *demo_args, "--out", str(demo)]) == 0
    with Image.open(demo) as im:
        # ground truth, noisy, reconstruction, std
        assert im.width > 4 * 40
    with pytest.raises(SystemExit, match="--std-out needs --samples"):
        main([*args, "--out", str(out), "--std-out", str(std)])
    with pytest.raises(SystemExit, match="--samples must be >= 1"):
        main([*args, "--out", str(out), "--samples", "0"])


def test_ensemble_option_reaches_the_fit(tmp_path, capsys):
    src, init = (
        tmp_path / "x.png",
        str(_init(steps=2).to(dtype=torch.float32).save(tmp_path / "g.safetensors")),
    )
    io.save_image(src, smooth_image(3, 24, 24))
    args = ["reconstruct", str(src), "--task", "denoise", "--simulate", "--init", init]
    outs = {}
    for n in ("1", "8"):
        outs[n] = tmp_path / f"e{n}.npy"
        assert main([*args, "--out", str(outs[n]), "--ensemble", n]) == 0
    assert not np.allclose(np.load(outs["1"]), np.load(outs["8"]))
    with pytest.raises(SystemExit):
        main([*args, "--out", str(outs["1"]), "--ensemble", "3"])
    # A noise-input init has no input image to flip: a clear error, exit status 2.
    noise = str(tiny_init(3, steps=2).save(tmp_path / "n.safetensors"))
    assert main([*args[:-1], noise, "--out", str(outs["1"]), "--ensemble", "8"]) == 2
    assert "reads fixed noise" in capsys.readouterr().err


def test_cli_errors_are_clear(tmp_path, init_file, capsys):
    with pytest.raises(SystemExit, match="--shape"):
        main(["reconstruct", "y.npy", "--task", "cs", "--out", "o.npy"])
    assert (
        main(
            [
                "reconstruct",
                str(tmp_path / "missing.png"),
                "--task",
                "denoise",
                "--out",
                str(tmp_path / "o.png"),
            ]
        )
        == 2
    )
    assert "no such image file" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--steps"):
        main(["demo", "--steps", "-1"])
    with pytest.raises(SystemExit, match="unknown task"):
        main(["demo", "--tasks", "denoise,deblur"])


def test_average_writes_the_mean_of_the_weights(tmp_path, capsys):
    files = [
        str(tiny_init(3, steps=2, seed=s).save(tmp_path / f"i{s}.safetensors")) for s in (1, 2)
    ]
    out = tmp_path / "soup.safetensors"
    assert main(["average", *files, "--out", str(out)]) == 0
    assert "2 inits averaged" in capsys.readouterr().out
    a, b, soup = (MetaInit.load(f) for f in (*files, out))
    for name, w in a.weights.items():
        assert torch.allclose(soup.weights[name], (w + b.weights[name]) / 2, rtol=0, atol=1e-15)
    assert soup.metadata["averaged_base"]["file"] == files[0]
    assert [m["file"] for m in soup.metadata["averaged_with"]] == files[1:]
    digest = hashlib.sha256(Path(files[1]).read_bytes()).hexdigest()
    assert soup.metadata["averaged_with"][0]["sha256"] == digest
    assert torch.equal(soup.log_lr, a.log_lr)


def test_average_errors_are_clear(tmp_path, capsys):
    one = str(tiny_init(3, steps=2).save(tmp_path / "one.safetensors"))
    wide = str(tiny_init(3, steps=2, width=8).save(tmp_path / "wide.safetensors"))
    out = str(tmp_path / "o.safetensors")
    assert main(["average", one, "--out", out]) == 2
    assert "at least two init files, got 1" in capsys.readouterr().err
    assert main(["average", one, wide, "--out", out]) == 2
    assert "init 1 has network" in capsys.readouterr().err
    assert main(["average", one, str(tmp_path / "missing.safetensors"), "--out", out]) == 2
    assert "no init file" in capsys.readouterr().err


def test_image_io_round_trip(tmp_path):
    x = smooth_image(3, 10, 12)
    io.save_image(tmp_path / "a.png", x)
    back = io.load_image(tmp_path / "a.png")
    assert back.shape == (3, 10, 12) and (back - x).abs().max() <= 0.5 / 255 + 1e-6
    io.save_image(tmp_path / "g.tif", x[:1])
    assert torch.equal(io.load_image(tmp_path / "g.tif"), x[:1])
    with pytest.raises(ValueError, match="unsupported"):
        io.save_image(tmp_path / "a.xyz", x)
