"""Operators: shapes, adjointness in float64, seeded rebuild, noise statistics, errors."""

from __future__ import annotations

import math

import pytest
import torch

from metadip.operators import (
    Blur,
    CompressiveSensing,
    Denoise,
    Inpainting,
    LinearOperator,
    PhaseRetrieval,
    PhysicsAdapter,
    Stacked,
    SuperResolution,
    as_operator,
    moved,
)

F64 = torch.float64
SHAPE = (3, 12, 10)


def _linear_ops():
    A = torch.randn(17, 2 * 6 * 5, dtype=F64, generator=torch.Generator().manual_seed(3))
    return {
        "denoise": Denoise(SHAPE, 0.1),
        "cs": CompressiveSensing(SHAPE, 0.3, seed=1, dtype=F64),
        "cs-channelwise": CompressiveSensing(SHAPE, 0.3, seed=1, channelwise=True, dtype=F64),
        "inpaint-ratio": Inpainting(SHAPE, ratio=0.5, seed=2, dtype=F64),
        "inpaint-box": Inpainting(SHAPE, box="center", dtype=F64),
        "blur": Blur(SHAPE, kernel_size=5, kernel_sigma=1.5, dtype=F64),
        "blur-gray-odd": Blur((1, 9, 13), kernel_size=3, kernel_sigma=1.0, dtype=F64),
        "sr": SuperResolution((3, 12, 10), 2),
        "matrix": LinearOperator.from_matrix(A, (2, 6, 5)),
        "callables": LinearOperator.from_callables(
            lambda x: 2 * x.flip(-1), lambda y: 2 * y.flip(-1), (1, 4, 5), (1, 4, 5)
        ),
    }


@pytest.mark.parametrize("name", list(_linear_ops()))
def test_adjointness(name):
    op = _linear_ops()[name]
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, *op.in_shape, dtype=F64, generator=g)
    y = torch.randn(2, *op.out_shape, dtype=F64, generator=g)
    lhs = (op.forward(x) * y).sum()
    rhs = (x * op.adjoint(y)).sum()
    assert abs(lhs - rhs) <= 1e-5 * max(abs(lhs), abs(rhs)), (lhs, rhs)


@pytest.mark.parametrize("name", list(_linear_ops()))
def test_shapes_batched_and_single(name):
    op = _linear_ops()[name]
    x = torch.rand(op.in_shape, dtype=F64)
    assert op.forward(x).shape == op.out_shape
    assert op.forward(x[None].expand(3, *op.in_shape)).shape == (3, *op.out_shape)
    assert op.adjoint(op.forward(x)).shape == op.in_shape


def test_measurement_sizes():
    cs = CompressiveSensing((3, 8, 8), 0.25, seed=0)
    assert cs.m == round(0.25 * 192) and cs.out_shape == (cs.m,)
    csc = CompressiveSensing((3, 8, 8), 0.25, seed=0, channelwise=True)
    assert csc.out_shape == (3, 16)
    pr = PhaseRetrieval((1, 8, 8), 0.125, seed=0)
    assert pr.out_shape == (8,) and pr.a_real.shape == (8, 64)
    assert SuperResolution((1, 8, 6), 2).out_shape == (1, 4, 3)


@pytest.mark.parametrize("cls", [CompressiveSensing, PhaseRetrieval])
def test_seeded_rebuild_is_identical(cls):
    a = cls((1, 16, 16), 0.25, sigma=0.1, seed=42)
    b = cls((1, 16, 16), 0.25, sigma=0.1, seed=42)
    c = cls((1, 16, 16), 0.25, sigma=0.1, seed=43)
    x = torch.rand(1, 16, 16)
    assert torch.equal(a.forward(x), b.forward(x))
    assert not torch.equal(a.forward(x), c.forward(x))
    for ma, mb in zip(a.planes(), b.planes(), strict=True):
        assert torch.equal(ma, mb)


def test_seeded_inpainting_rebuild():
    a = Inpainting((1, 20, 20), ratio=0.3, seed=5)
    assert torch.equal(a.mask, Inpainting((1, 20, 20), ratio=0.3, seed=5).mask)
    assert abs(float(a.mask.mean()) - 0.3) < 0.1


def test_matrix_entry_statistics():
    op = CompressiveSensing((1, 32, 32), 0.25, seed=0, dtype=F64)
    assert abs(float(op.matrix.var()) * op.m - 1) < 0.02
    pr = PhaseRetrieval((1, 32, 32), 0.25, seed=0, dtype=F64)
    assert abs(float(pr.a_real.var() + pr.a_imag.var()) * pr.m - 1) < 0.02


@pytest.mark.parametrize(
    "op",
    [Denoise((1, 64, 64), 0.2), CompressiveSensing((1, 64, 64), 0.5, sigma=0.2, seed=0)],
    ids=["denoise", "cs"],
)
def test_measured_noise_has_stated_std(op):
    x = torch.rand(op.in_shape)
    e = op.measure(x, torch.Generator().manual_seed(0)) - op.forward(x)
    assert abs(float(e.std()) - 0.2) < 0.01


def test_phase_retrieval_noise_model():
    op = PhaseRetrieval((1, 32, 32), 1.0, sigma=0.3, seed=0, dtype=F64)
    x = torch.rand(16, *op.in_shape, dtype=F64)
    y = op.measure(x, torch.Generator().manual_seed(0))
    assert (y >= 0).all()
    # y = |Ax + e| with E|e|^2 = sigma^2: E[y^2] = |Ax|^2 + sigma^2.
    excess = float((y**2 - op.forward(x) ** 2).mean())
    assert abs(excess - 0.09) < 0.01


def test_inpainting_zeroes_missing_pixels_even_with_noise():
    op = Inpainting((2, 9, 9), box=(2, 3, 4, 2), sigma=0.5)
    y = op.measure(torch.rand(op.in_shape), torch.Generator().manual_seed(0))
    assert (y[:, 2:6, 3:5] == 0).all() and (y[:, 0] != 0).all()


def test_measure_is_reproducible_with_generator():
    op = Denoise((1, 8, 8), 0.1)
    x = torch.rand(op.in_shape)
    y1 = op.measure(x, torch.Generator().manual_seed(3))
    y2 = op.measure(x, torch.Generator().manual_seed(3))
    assert torch.equal(y1, y2)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Denoise((3, 0, 4), 0.1), "positive"),
        (lambda: Denoise((1, 2, 3, 4, 5), 0.1), r"\(C, H, W\)"),
        (lambda: Denoise((1, 4, 4), -1.0), "sigma"),
        (lambda: Denoise((1, 4, 4), math.nan), "sigma"),
        (lambda: CompressiveSensing((1, 4, 4), 0.0), "ratio"),
        (lambda: CompressiveSensing((1, 4, 4), 1.5), "ratio"),
        (lambda: Inpainting((1, 4, 4)), "exactly one"),
        (lambda: Inpainting((1, 4, 4), box=(3, 3, 4, 4)), "does not fit"),
        (lambda: Blur((1, 8, 8), kernel_size=4), "odd"),
        (lambda: SuperResolution((1, 9, 8), 2), "divisible"),
        (lambda: LinearOperator.from_matrix(torch.zeros(3, 5), (1, 2, 2)), "columns"),
    ],
)
def test_bad_construction_raises(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_shape_mismatch_is_an_error_not_a_broadcast():
    op = Denoise((3, 8, 8), 0.1)
    with pytest.raises(ValueError, match=r"\(3, 8, 8\)"):
        op.forward(torch.rand(1, 8, 8))
    with pytest.raises(ValueError, match="got"):
        op.forward(torch.rand(8, 8))
    with pytest.raises(TypeError, match="torch.Tensor"):
        op.forward([[0.0]])


def test_phase_retrieval_has_no_adjoint():
    with pytest.raises(NotImplementedError, match="not linear"):
        PhaseRetrieval((1, 4, 4), 0.5).adjoint(torch.zeros(8))


def test_user_callable_output_shape_is_checked():
    op = LinearOperator.from_callables(lambda x: x[..., :2], None, (1, 3, 3), (1, 3, 3))
    with pytest.raises(ValueError, match="user-supplied forward"):
        op.forward(torch.rand(1, 3, 3))


class _Physics:
    """The shape of a deepinv Physics: .A and .A_adjoint on batched tensors."""

    def A(self, x):  # noqa: N802
        return x[..., ::2, :] * 2

    def A_adjoint(self, y):  # noqa: N802
        out = torch.zeros(*y.shape[:-2], 2 * y.shape[-2], y.shape[-1], dtype=y.dtype)
        out[..., ::2, :] = 2 * y
        return out


def test_physics_adapter():
    op = as_operator(_Physics(), in_shape=(1, 6, 4))
    assert isinstance(op, PhysicsAdapter) and op.linear and op.out_shape == (1, 3, 4)
    x, y = torch.randn(2, 1, 6, 4, dtype=F64), torch.randn(2, 1, 3, 4, dtype=F64)
    assert torch.allclose((op.forward(x) * y).sum(), (x * op.adjoint(y)).sum())


class _ModulePhysics(torch.nn.Module):
    """A deepinv-like Physics that is a module with a buffer (a row mask)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("rows", torch.tensor([1.0, 0.0, 2.0], dtype=F64))

    def A(self, x):  # noqa: N802
        return x * self.rows.view(-1, 1)

    def A_adjoint(self, y):  # noqa: N802
        return y * self.rows.view(-1, 1)


def test_physics_module_is_probed_on_its_dtype_and_moves_with_the_adapter():
    physics = _ModulePhysics()
    op = as_operator(physics, in_shape=(1, 3, 2))
    assert op.out_shape == (1, 3, 2)  # the float64 probe went through the float64 buffer
    x = torch.rand(1, 3, 2)
    copy = moved(op, dtype=torch.float32)
    assert copy.physics is not physics and copy.physics.rows.dtype == torch.float32
    assert physics.rows.dtype == F64  # the caller's physics is untouched
    torch.testing.assert_close(copy(x), x * torch.tensor([1.0, 0.0, 2.0]).view(-1, 1))
    assert moved(op, dtype=F64) is op
    op.to(dtype=torch.float32)  # in place, as modules move
    assert physics.rows.dtype == torch.float32


def test_as_operator_errors():
    with pytest.raises(ValueError, match="in_shape"):
        as_operator(_Physics())
    with pytest.raises(TypeError, match="forward/A"):
        as_operator(object())
    with pytest.raises(ValueError, match="contradicts"):
        as_operator(Denoise((1, 4, 4), 0.1), in_shape=(1, 5, 5))


def test_plain_callable_becomes_an_operator():
    op = as_operator(lambda x: x.mean(dim=(-1, -2)), in_shape=(3, 5, 5))
    assert op.out_shape == (3,) and not op.linear


def test_to_moves_and_casts():
    op = CompressiveSensing((1, 4, 4), 0.5, seed=0).to(dtype=F64)
    assert op.matrix.dtype == F64 and op.dtype == F64
    assert op.forward(torch.rand(1, 4, 4, dtype=F64)).dtype == F64


@pytest.mark.parametrize(
    "make",
    [
        lambda: CompressiveSensing((2, 4, 4), 0.5, sigma=0.1, seed=0),
        lambda: PhaseRetrieval((1, 4, 4), 0.5, seed=1),
        lambda: Inpainting((3, 5, 4), ratio=0.5, seed=2),
        lambda: Blur((1, 9, 9), kernel_size=3, kernel_sigma=1.0),
        lambda: LinearOperator.from_matrix(torch.randn(5, 12), (3, 2, 2)),
        lambda: Stacked([Inpainting((1, 4, 4), ratio=r, seed=3) for r in (0.3, 0.6)]),
    ],
)
def test_operators_are_modules_whose_tensors_are_buffers(make):
    op = make()
    assert isinstance(op, torch.nn.Module) and not list(op.parameters())
    names = {n for n, _ in op.named_buffers()}
    assert names and all(b.dtype == torch.float32 for b in op.buffers())
    x = torch.rand(op.ops.__len__() if isinstance(op, Stacked) else 2, *op.in_shape)
    expected = op(x).double()
    # moved() leaves the caller's operator alone; .to() moves in place, as modules do.
    copy = moved(op, dtype=F64)
    assert copy is not op and all(b.dtype == F64 for b in copy.buffers())
    assert all(b.dtype == torch.float32 for b in op.buffers())
    torch.testing.assert_close(copy(x.double()), expected, rtol=1e-5, atol=1e-6)
    assert moved(op, dtype=torch.float32) is op
    assert op.to(dtype=F64) is op and all(b.dtype == F64 for b in op.buffers())
    assert {n for n, _ in op.state_dict().items()} == names


def test_deepinv_names_and_pseudo_inverses():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 6, 6, generator=g, dtype=F64)
    inp = Inpainting((3, 6, 6), ratio=0.5, seed=1).to(dtype=F64)
    for op in (Denoise((3, 6, 6), 0.1), inp, SuperResolution((3, 6, 6), 3), Blur((3, 6, 6))):
        op = op.to(dtype=F64)
        torch.testing.assert_close(op.A(x), op.forward(x))
        torch.testing.assert_close(op.A_adjoint(op.A(x)), op.adjoint(op.A(x)))
    for op in (Denoise((3, 6, 6), 0.1), inp, SuperResolution((3, 6, 6), 3)):
        y = op.A(x)
        # The Moore-Penrose conditions A A⁺ A = A and A⁺ A A⁺ = A⁺, on x and on y.
        torch.testing.assert_close(op.A(op.A_dagger(y)), y)
        torch.testing.assert_close(op.A_dagger(op.A(op.A_dagger(y))), op.A_dagger(y))
    with pytest.raises(NotImplementedError, match="Blur has no cheap pseudo-inverse"):
        Blur((3, 6, 6)).A_dagger(torch.rand(3, 6, 6))


@pytest.mark.parametrize("channelwise", [False, True])
def test_seeded_cs_is_adjoint_and_matches_its_materialized_matrix(channelwise):
    op = CompressiveSensing(
        (2, 6, 7), 0.3, seed=9, channelwise=channelwise, dtype=F64, storage="seeded"
    )
    assert not hasattr(op, "matrix") and [n for n, _ in op.named_buffers()] == ["_anchor"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, *op.in_shape, dtype=F64, generator=g)
    y = torch.randn(3, *op.out_shape, dtype=F64, generator=g)
    lhs, rhs = (op.forward(x) * y).sum(), (x * op.adjoint(y)).sum()
    assert abs(lhs - rhs) <= 1e-10 * abs(lhs)
    (a,) = op.planes()  # materialized on request
    assert a.shape == (op.m, op.n)
    torch.testing.assert_close(op.forward(x).reshape(-1, op.m), x.reshape(-1, op.n) @ a.t())
    again = CompressiveSensing(
        (2, 6, 7), 0.3, seed=9, channelwise=channelwise, dtype=F64, storage="seeded"
    )
    assert torch.equal(again.forward(x), op.forward(x))
    assert abs(float(a.var()) * op.m - 1) < 0.3


def test_seeded_phase_retrieval_matches_its_materialized_matrix():
    from metadip.reference import complex_measure_ref

    op = PhaseRetrieval((1, 9, 8), 0.5, seed=4, dtype=F64, storage="seeded")
    x = torch.rand(2, *op.in_shape, dtype=F64)
    expected = complex_measure_ref(x.reshape(2, -1), *op.planes())
    torch.testing.assert_close(op.forward(x), expected)
    y = op.measure(x, torch.Generator().manual_seed(0))
    assert y.shape == (2, *op.out_shape) and (y >= 0).all()
    single = moved(op, dtype=torch.float32)
    assert single.storage == "seeded" and single.forward(x.float()).dtype == torch.float32
    assert op.dtype == F64


def test_unknown_storage_is_an_error():
    with pytest.raises(ValueError, match="storage"):
        CompressiveSensing((1, 4, 4), 0.5, storage="sparse")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("channelwise", [True, False], ids=["channelwise", "joint"])
@pytest.mark.parametrize("storage", ["dense", "seeded"])
@pytest.mark.parametrize("cls", [CompressiveSensing, PhaseRetrieval])
def test_residual_sq_value_and_gradient_match_the_forward(cls, dtype, channelwise, storage):
    """Dense CS and PR compute ‖F(x) − y‖² and its gradient in one pass of A; both equal
    the plain forward's (float64 here, the same arithmetic in float32)."""
    op = cls(SHAPE, 0.3, seed=4, channelwise=channelwise, storage=storage, dtype=dtype)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, *SHAPE, generator=g, dtype=dtype, requires_grad=True)
    y = torch.randn(4, *op.out_shape, generator=g, dtype=dtype)
    got = op.residual_sq(x, y)
    want = (op.forward(x) - y).pow(2).flatten(1).sum(dim=1)
    w = torch.rand(4, generator=g, dtype=dtype)
    (g_got,) = torch.autograd.grad((w * got).sum(), x)
    (g_want,) = torch.autograd.grad((w * want).sum(), x)
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {}
    torch.testing.assert_close(got, want, **tol)
    torch.testing.assert_close(g_got, g_want, **tol)


def test_fused_residual_is_first_order_only_and_errors_are_clear():
    op = CompressiveSensing(SHAPE, 0.3, seed=4, dtype=F64)
    x = torch.rand(2, *SHAPE, dtype=F64, requires_grad=True)
    y = torch.randn(2, *op.out_shape, dtype=F64)
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.autograd.grad(op.residual_sq(x, y).sum(), x, create_graph=True)
    with pytest.raises(ValueError, match="2 problems but y has 3"):
        op.residual_sq(x, torch.randn(3, *op.out_shape, dtype=F64))
    with pytest.raises(ValueError, match="must have shape"):
        op.residual_sq(x, y[:, :-1])
    # A y that needs a gradient takes the plain (twice differentiable) path.
    yg = y.clone().requires_grad_()
    (gy,) = torch.autograd.grad(op.residual_sq(x, yg).sum(), yg)
    torch.testing.assert_close(gy, -2 * (op.forward(x) - y))
