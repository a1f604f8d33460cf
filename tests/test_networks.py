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
