"""Networks: shapes for awkward sizes, independence of batch items, clear size errors."""

from __future__ import annotations

import pytest
import torch

from metadip.netconfig import NetConfig
from metadip.networks import Siren, SkipNet, build_network, network_input, noise_input


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("hw", [(97, 131), (64, 64), (33, 40)])
def test_skip_output_shape_and_range(channels, hw):
    net = SkipNet(in_channels=5, out_channels=channels, width=8, depth=5, skip=4)
    out = net(torch.randn(2, 5, *hw))
    assert out.shape == (2, channels, *hw)
    assert (out > 0).all() and (out < 1).all()


def test_default_architecture_matches_dip():
    net = build_network(NetConfig(out_channels=3))
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert net.depth == 5
    assert {c.out_channels for c in convs} == {128, 4, 3}
    assert {c.kernel_size for c in convs} == {(3, 3), (1, 1)}
    assert all(c.padding_mode == "reflect" for c in convs if c.kernel_size == (3, 3))
    assert sum(c.stride == (2, 2) for c in convs) == 5
    assert convs[0].in_channels == 32 + 2 * 16


def test_items_of_a_batch_are_independent():
    net = SkipNet(3, 1, width=6, depth=3)
    a, b = torch.randn(1, 3, 20, 24), torch.randn(1, 3, 20, 24)
    together = net(torch.cat([a, b]))
    torch.testing.assert_close(together[0], net(a)[0])
    torch.testing.assert_close(together[1], net(b)[0])


def test_too_small_image_is_a_clear_error():
    net = SkipNet(3, 1, width=4, depth=5)
    with pytest.raises(ValueError, match="too small"):
        net(torch.randn(1, 3, 12, 40))
    net(torch.randn(1, 3, 33, 33))
    with pytest.raises(ValueError, match="at least 33"):
        net(torch.randn(1, 3, 32, 33))


def test_siren_shape():
    net = Siren(2, 3, width=16, depth=2)
    assert net(torch.randn(2, 2, 9, 11)).shape == (2, 3, 9, 11)


def test_network_input_layout():
    cfg = NetConfig(noise_channels=4, num_fourier=3)
    z = noise_input(4, 10, 12, seed=0, dtype=torch.float32)
    assert torch.equal(z, noise_input(4, 10, 12, seed=0, dtype=torch.float32))
    assert z.min() >= 0 and z.max() < 0.1
    inp = network_input(cfg, z, torch.randn(3, 2))
    assert inp.shape == (1, cfg.in_channels, 10, 12) and torch.equal(inp[:, :4], z)


def test_config_validation():
    with pytest.raises(ValueError, match="kind"):
        NetConfig(kind="unet")
    with pytest.raises(ValueError, match="width"):
        NetConfig(width=0)
    with pytest.raises(ValueError, match="unknown"):
        NetConfig.from_dict({"widht": 3})


@pytest.mark.parametrize("hw", [(33, 47), (64, 64)])
def test_channels_last_path_matches_float64(hw):
    """The float32 CPU network without normalization runs channels-last; its output,
    gradients and second derivatives match the same network in float64 (plain NCHW)."""
    torch.manual_seed(0)
    net = SkipNet(4, 3, width=8, depth=3, residual=True, norm="none")
    with torch.no_grad():
        net.out.weight.normal_(0, 0.3)  # a zero head would make the output the guide alone
    assert net.fast_layout and not SkipNet(4, 3, norm="instance").fast_layout
    x = torch.rand(2, 4, *hw)

    def derivatives(model, inp):
        out = model(inp)
        params = list(model.parameters())
        grads = torch.autograd.grad(out.sin().sum(), params, create_graph=True)
        second = torch.autograd.grad(sum(g.square().sum() for g in grads), params)
        return out, grads, second

    out, grads, second = derivatives(net, x)
    ref_out, ref_grads, ref_second = derivatives(net.to(torch.float64), x.double())
    assert out.is_contiguous()
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-5, atol=1e-5)
    for got, ref in zip(grads + second, ref_grads + ref_second, strict=True):
        torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_channels_last_path_runs_under_vmap():
    """Batched inputs and stacked parameters through the fast layout, as
    ``torch.func.vmap`` users (and the vmap benchmark) run it, give the per-item results."""
    from torch.func import functional_call, grad, vmap

    torch.manual_seed(0)
    net = SkipNet(4, 3, width=8, depth=3, residual=True, norm="none")
    with torch.no_grad():
        net.out.weight.normal_(0, 0.3)
    params = {k: v.detach() for k, v in net.named_parameters()}
    stacked = {k: torch.stack([v, 1.1 * v]) for k, v in params.items()}
    xs = torch.rand(2, 1, 4, 24, 40)

    def loss(p, x):
        return functional_call(net, p, (x,)).sin().sum()

    batched = vmap(grad(loss, argnums=(0, 1)))(stacked, xs)
    for i in range(2):
        one = grad(loss, argnums=(0, 1))({k: v[i] for k, v in stacked.items()}, xs[i])
        torch.testing.assert_close(batched[1][i], one[1])
        for k in params:
            torch.testing.assert_close(batched[0][k][i], one[0][k])
