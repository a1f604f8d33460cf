"""Classical solvers after the network (metadip.classical): float64 gradients against
finite differences, the data-consistency property, the solver in the inner loop and in
the meta-gradient, and clear errors."""

from __future__ import annotations

import pytest
import torch

import metadip
from metadip.classical import gd, red, solver_for
from metadip.classical.dncnn import DnCNN
from metadip.init import MetaInit
from metadip.meta import meta_gradient
from metadip.netconfig import NetConfig
from metadip.operators import Blur, CompressiveSensing, Inpainting, PhaseRetrieval, gram_norm

F64 = torch.float64


def _siren(solver: str = "gd", iters: int = 2, step: float = 0.5, **kw) -> MetaInit:
    network = {"solver": solver, "solver_iters": iters, "solver_step": step, **kw}
    return MetaInit.random(
        1, width=8, depth=2, steps=3, kind="siren", num_fourier=0, dtype=F64, network=network
    )


def test_gd_and_red_gradients_match_finite_differences():
    torch.manual_seed(0)
    op = Blur((1, 6, 6), kernel_size=3, kernel_sigma=1.0).to(dtype=F64)
    y = torch.randn(1, 1, 6, 6, dtype=F64)
    x0 = torch.randn(1, 1, 6, 6, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: gd(x, y, op, 3, 0.7), (x0,))
    net = DnCNN(1, width=4, depth=2).to(F64)
    assert torch.autograd.gradcheck(lambda x: red(x, y, op, 2, 0.5, 0.3, net), (x0,))
    assert torch.autograd.gradgradcheck(lambda x: red(x, y, op, 2, 0.5, 0.3, net), (x0,))


def test_gd_is_landweber_and_red_without_weight_is_gd():
    torch.manual_seed(1)
    op = CompressiveSensing((1, 4, 4), 0.5, seed=2).to(dtype=F64)
    y = torch.randn(1, *op.out_shape, dtype=F64)
    x = torch.randn(1, 1, 4, 4, dtype=F64)
    a = op.matrix.reshape(-1, 16) if op.matrix.dim() > 2 else op.matrix
    expect = x.reshape(1, 16)
    for _ in range(3):
        expect = expect - 0.2 * (expect @ a.T - y.reshape(1, -1)) @ a
    assert torch.allclose(gd(x, y, op, 3, 0.2).reshape(1, 16), expect, atol=1e-12)
    assert torch.allclose(red(x, y, op, 3, 0.2, 0.0, lambda v: 0 * v), gd(x, y, op, 3, 0.2))


def test_one_full_gd_step_makes_observed_pixels_the_measurement():
    # x − Mᵀ(M x − y) keeps the prior's image where nothing is observed and takes y where
    # everything is: the result is data-consistent whatever the network made.
    op = Inpainting((1, 8, 8), ratio=0.5, seed=3).to(dtype=F64)
    x_true = torch.rand(1, 8, 8, dtype=F64)
    y = op.forward(x_true)
    init = _siren(iters=1, step=1.0)
    rec = metadip.reconstruct(y, op, init=init, steps=3, dtype=F64, graph=False)
    mask = op.mask.bool().expand(1, 8, 8)
    assert torch.allclose(rec.image[mask], x_true[mask], atol=1e-12)


def test_solver_in_the_meta_gradient_checkpointed_equals_unrolled():
    torch.manual_seed(4)
    op = Inpainting((1, 8, 8), ratio=0.5, seed=5).to(dtype=F64)
    x = torch.rand(1, 8, 8, dtype=F64)
    task = (x, op, op.forward(x))
    init = _siren(iters=2, step=0.6)
    v1, g1 = meta_gradient(init, [task], 3, mode="unrolled")
    v2, g2 = meta_gradient(init, [task], 3, mode="checkpointed", segment=2)
    assert torch.allclose(v1, v2, atol=1e-12)
    for k in g1:
        assert torch.allclose(g1[k], g2[k], atol=1e-10), k
    # The solver is part of the graph: without it the same weights give other gradients.
    plain = MetaInit.random(1, width=8, depth=2, steps=3, kind="siren", num_fourier=0, dtype=F64)
    _, g0 = meta_gradient(plain, [task], 3, mode="unrolled")
    assert not torch.allclose(g0["log_lr"], g1["log_lr"])


def test_solver_configuration_and_operator_errors():
    with pytest.raises(ValueError, match="solver must be one of"):
        NetConfig(solver="admm")
    with pytest.raises(ValueError, match="solver_iters"):
        NetConfig(solver="gd", solver_iters=0)
    with pytest.raises(ValueError, match="solver_weight"):
        NetConfig(solver_weight=-1.0)
    op = Inpainting((1, 4, 4), ratio=0.5, seed=0)
    y = torch.zeros(1, 4, 4)
    with pytest.raises(ValueError, match="integer >= 0"):
        gd(y[None], y[None], op, -1, 0.5)
    with pytest.raises(ValueError, match="step must be finite and > 0"):
        gd(y[None], y[None], op, 1, 0.0)
    # An operator that sees nothing has ‖AᵀA‖ = 0: its relative step would be infinite.
    blind = Inpainting((1, 4, 4), ratio=0.5, seed=0)
    blind.mask.zero_()
    with pytest.raises(ValueError, match="infinite"):
        solver_for(NetConfig(solver="gd", solver_iters=1), blind, y[None])
    pr = PhaseRetrieval((1, 4, 4), 1.0, seed=0)
    with pytest.raises(ValueError, match="not linear"):
        metadip.reconstruct(torch.zeros(*pr.out_shape), pr, init=_siren().to(dtype=torch.float32))
    from metadip.inner import prepare

    with pytest.raises(ValueError, match="problem"):
        prepare(_siren(), (1, 4, 4))


def test_solver_init_round_trips_through_a_file(tmp_path):
    init = _siren(solver="red", iters=3, step=0.25, solver_weight=0.1)
    loaded = MetaInit.load(init.save(tmp_path / "c.safetensors"))
    assert loaded.config == init.config and loaded.config.solver == "red"


def test_gram_norm_and_steps_relative_to_it():
    # ‖AᵀA‖ of a dense matrix is its largest squared singular value.
    op = CompressiveSensing((1, 8, 8), 0.25, seed=6).to(dtype=F64)
    like = torch.zeros(2, 1, 8, 8, dtype=F64)
    top = torch.linalg.matrix_norm(op.matrix.reshape(-1, 64), ord=2) ** 2
    assert torch.allclose(gram_norm(op, like, iters=200), top.expand(2), rtol=1e-6)
    mask = Inpainting((1, 8, 8), ratio=0.5, seed=0).to(dtype=F64)
    assert torch.allclose(gram_norm(mask, like), torch.ones(2, dtype=F64))
    # Phase retrieval |Ax|: the Gram of v ↦ ∇½‖|Av|‖² = Re(AᴴA) v (the TV guide's step).
    pr = PhaseRetrieval((1, 8, 8), 0.5, seed=7).to(dtype=F64)
    a_real, a_imag = pr.planes()
    gram = a_real.t() @ a_real + a_imag.t() @ a_imag
    top = torch.linalg.matrix_norm(gram, ord=2)
    assert torch.allclose(gram_norm(pr, like, iters=200), top.expand(2), rtol=1e-6)
    # The init's step is in units of 1/‖AᵀA‖: the same init converges on CS, where the
    # absolute step would diverge (‖AᵀA‖ ≈ 9 here).
    y = op.forward(torch.rand(1, 8, 8, dtype=F64))[None]
    solve = solver_for(NetConfig(solver="gd", solver_iters=30, solver_step=1.0), op, y)
    x0 = torch.zeros(1, 1, 8, 8, dtype=F64)
    residual = (op.forward(solve(x0)) - y).norm()
    assert residual < 0.5 * (op.forward(x0) - y).norm()
    assert (op.forward(gd(x0, y, op, 30, 1.0)) - y).norm() > 1e3 * residual
