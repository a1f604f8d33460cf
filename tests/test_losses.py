"""The inner loss: the one-pass data fit equals the plain one."""

from __future__ import annotations

import pytest
import torch

from metadip.losses import fit_losses
from metadip.operators import CompressiveSensing, Denoise, PhaseRetrieval


@pytest.mark.parametrize(
    "make",
    [
        lambda: CompressiveSensing((3, 16, 12), 0.25, seed=1),
        lambda: CompressiveSensing((1, 16, 12), 0.25, seed=1, storage="seeded"),
        lambda: PhaseRetrieval((3, 16, 12), 0.25, seed=2),
        lambda: Denoise((3, 16, 12), 0.1),
    ],
    ids=["cs-dense", "cs-seeded", "pr-dense", "denoise"],
)
def test_first_order_fit_equals_the_plain_fit(make):
    """``first_order=True`` (dense CS and PR: value and gradient from one read of A) gives the
    loss and gradient of the plain forward, per image, TV term included."""
    op = make()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, *op.in_shape, generator=g, requires_grad=True)
    y = op.forward(torch.rand(3, *op.in_shape, generator=g))
    w = torch.rand(3, generator=g)
    results = []
    for first_order in (False, True):
        loss = fit_losses(x, y, op, 0.05, 1e-6, first_order=first_order)
        (grad,) = torch.autograd.grad((w * loss).sum(), x)
        results.append((loss, grad))
    (plain, g_plain), (fused, g_fused) = results
    torch.testing.assert_close(fused, plain)
    torch.testing.assert_close(g_fused, g_plain)
