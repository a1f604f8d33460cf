"""Layers: the fast CPU layout and the concatenation that keeps gradients dense."""

from __future__ import annotations

import torch

from metadip.layers import channel_cat, to_fast_layout

CL = torch.channels_last


def test_to_fast_layout_is_channels_last_for_float32_cpu_only():
    x = torch.rand(2, 5, 7, 9)
    fast = to_fast_layout(x)
    assert fast.is_contiguous(memory_format=CL) and not fast.is_contiguous()
    assert torch.equal(fast, x)
    for other in (x.double(), x[0]):  # float64 and 3-D inputs keep their layout
        assert to_fast_layout(other) is other


def test_channel_cat_matches_cat_and_hands_back_dense_gradients():
    a = torch.rand(2, 4, 6, 5).contiguous(memory_format=CL).requires_grad_()
    b = torch.rand(2, 7, 6, 5).contiguous(memory_format=CL).requires_grad_()
    out = channel_cat(a, b)
    assert torch.equal(out, torch.cat([a, b], dim=1))
    g = torch.rand_like(out)
    ga, gb = torch.autograd.grad(out, (a, b), g)
    # torch.cat's own backward gives strided channel slices of g; these are dense.
    assert ga.is_contiguous(memory_format=CL) and gb.is_contiguous(memory_format=CL)
    assert torch.equal(ga, g[:, :4]) and torch.equal(gb, g[:, 4:])


def test_channel_cat_first_and_second_derivatives():
    a = torch.rand(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.rand(1, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(channel_cat, (a, b))
    assert torch.autograd.gradgradcheck(channel_cat, (a, b))
