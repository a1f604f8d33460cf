"""The Deep Decoder: its layers against a plain-torch reference, grouped copies, sizes,
and fitting / training end to end."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metadip.api import reconstruct
from metadip.cli import main
from metadip.decoder import DeepDecoder, decoder_input_size
from metadip.init import MetaInit
from metadip.inner import prepare
from metadip.metrics import psnr
from metadip.netconfig import NetConfig
from metadip.operators import Denoise
from metadip.shipped import load_init
from tests.conftest import smooth_image
from tests.test_train import _args, images  # noqa: F401 (fixture)

F64 = torch.float64


def decoder_ref(params: dict[str, torch.Tensor], z: torch.Tensor, depth: int) -> torch.Tensor:
    """Heckel & Hand's decoder written out: (conv1x1, up×2, ReLU, norm) × (d−1), then
    conv1x1, ReLU, norm, conv1x1, sigmoid; the norm per image and channel over H×W."""
    h = z
    for i in range(depth):
        h = F.conv2d(h, params[f"convs.{i}.weight"])
        if i + 1 < depth:
            h = F.interpolate(h, scale_factor=2.0, mode="bilinear", align_corners=False)
        h = torch.relu(h)
        mu = h.mean(dim=(2, 3), keepdim=True)
        var = h.var(dim=(2, 3), keepdim=True, correction=0)
        w, b = params[f"norms.{i}.weight"], params[f"norms.{i}.bias"]
        h = (h - mu) / torch.sqrt(var + 1e-5) * w.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)
    return torch.sigmoid(F.conv2d(h, params["out.weight"], params["out.bias"]))


def test_matches_the_reference_in_float64():
    torch.manual_seed(0)
    net = DeepDecoder(3, width=8, depth=4).to(F64)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    z = torch.rand(2, 8, 5, 3, dtype=F64)
    out = net(z)
    assert out.shape == (2, 3, 40, 24)
    params = dict(net.named_parameters())
    torch.testing.assert_close(out, decoder_ref(params, z, 4), rtol=1e-12, atol=1e-12)


def test_grouped_copies_are_separate_networks():
    torch.manual_seed(1)
    nets = [DeepDecoder(1, width=4, depth=3).to(F64) for _ in range(2)]
    grouped = DeepDecoder(1, width=4, depth=3, groups=2).to(F64)
    with torch.no_grad():
        for name, p in grouped.named_parameters():
            p.copy_(torch.cat([dict(n.named_parameters())[name] for n in nets]))
    z = torch.rand(2, 4, 3, 3, dtype=F64)
    out = grouped(z.reshape(1, 8, 3, 3)).view(2, 1, 12, 12)
    for i, n in enumerate(nets):
        torch.testing.assert_close(out[i], n(z[i : i + 1])[0], rtol=1e-12, atol=1e-12)


def test_under_parameterized():
    init = load_init("decoder", channels=3)
    count = sum(v.numel() for v in init.weights.values())
    assert count < 3 * 128 * 128  # fewer weights than the pixels of a 128x128 colour image
    assert init.config.kind == "decoder" and init.jitter == 0 and init.ema == 0


def test_sizes_and_config_errors():
    assert decoder_input_size(128, 96, 6) == (4, 3)
    with pytest.raises(ValueError, match=r"multiples of 2\*\*\(depth-1\) = 32; got 100x128"):
        decoder_input_size(100, 128, 6)
    with pytest.raises(ValueError, match="the deep decoder takes no Fourier features"):
        NetConfig(kind="decoder", num_fourier=16)
    init = load_init("decoder", channels=1)
    with pytest.raises(ValueError, match="got 40x40"):
        prepare(init, (1, 40, 40))


def test_fits_a_denoising_problem(tmp_path):
    x = smooth_image(1, 64, 64)
    op = Denoise(x.shape, 0.1)
    y = op.measure(x, torch.Generator().manual_seed(0))
    rec = reconstruct(y, op, init="decoder", steps=150)
    assert psnr(rec.image, x) > psnr(y.clamp(0, 1), x) + 3
    # Saved and loaded, it is the same init.
    init = load_init("decoder", channels=1)
    again = MetaInit.load(init.save(tmp_path / "dd.safetensors"))
    assert again.config == init.config
    for k, v in init.weights.items():
        torch.testing.assert_close(again.weights[k], v)


def test_trains_with_network_decoder(images, tmp_path):  # noqa: F811
    out = tmp_path / "dd"
    args = _args(images, out, outer_steps=2, network="decoder", width=4, depth=3, patch=16)
    assert main(args) == 0
    init = MetaInit.load(out / "init.safetensors")
    assert init.config.kind == "decoder" and init.config.num_fourier == 0
    x = torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(0))
    op = Denoise(x.shape, 0.1)
    rec = reconstruct(op.measure(x), op, init=out / "init.safetensors")
    assert rec.image.shape == x.shape and torch.isfinite(rec.image).all()
