"""Forward models ``y = M(x, e)``, as ``torch.nn.Module``s (deepinv's Physics shape).

Images are ``(C, H, W)`` or batched ``(B, C, H, W)`` float tensors in [0, 1].
Every operator has explicit ``in_shape`` / ``out_shape`` (without batch), a
noise level ``sigma`` on the [0, 1] scale, ``A(x)`` = ``forward(x)`` = ``op(x)``
(noise-free) and ``measure(x, generator=None)`` (with noise); linear ones also have
``A_adjoint(y)`` = ``adjoint(y)``, and ``A_dagger(y)`` where a pseudo-inverse is
cheap. Matrices, masks and kernels are buffers, so ``op.to(device, dtype)`` moves
them (in place, as for any module; ``moved`` makes a moved copy). Shapes that do not
match are errors, never broadcasts. Random operators are fully determined by
(shape, ratio, seed, dtype, device), so they can be rebuilt instead of stored.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metadip import dispatch, functional

__all__ = [
    "Blur",
    "CompressiveSensing",
    "Denoise",
    "Inpainting",
    "LinearOperator",
    "Operator",
    "PhaseRetrieval",
    "PhysicsAdapter",
    "Stacked",
    "SuperResolution",
    "as_operator",
    "moved",
]

Shape = tuple[int, ...]


def _image_shape(shape: Sequence[int], name: str = "shape") -> Shape:
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{name} must be (C, H, W) or (H, W) with positive sizes, got {shape}")
    return shape


def _generator(seed: int) -> torch.Generator:
    # Always draw on the CPU so the same seed gives the same operator on every device.
    return torch.Generator(device="cpu").manual_seed(int(seed))


def _check_ratio(ratio: float, name: str = "ratio") -> float:
    if not 0 < ratio <= 1:
        raise ValueError(f"{name} must be in (0, 1], got {ratio}")
    return float(ratio)


def _check_sigma(sigma: float) -> float:
    if not (sigma >= 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    return float(sigma)


class Operator(nn.Module):
    """Base class: a forward model with explicit shapes and a Gaussian noise model.

    ``task`` names the kind of problem (``"denoise"``, ``"cs"``, ``"pr"``, ...; ``"custom"``
    for wrapped callables): ``init="default"`` picks the shipped init for it.
    """

    linear: bool = False
    task: str = "custom"

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int], sigma: float = 0.0):
        super().__init__()
        self.in_shape: Shape = tuple(int(s) for s in in_shape)
        self.out_shape: Shape = tuple(int(s) for s in out_shape)
        self.sigma = _check_sigma(sigma)

    # -- shape handling -------------------------------------------------------------
    def _split(self, t: Tensor, shape: Shape, what: str) -> tuple[Tensor, bool]:
        """Returns t as a batch ``(B, *shape)`` and whether it came unbatched."""
        if not isinstance(t, Tensor):
            raise TypeError(f"{type(self).__name__}: {what} must be a torch.Tensor, got {type(t)}")
        if tuple(t.shape) == shape:
            return t.unsqueeze(0), True
        if t.dim() == len(shape) + 1 and tuple(t.shape[1:]) == shape:
            return t, False
        raise ValueError(
            f"{type(self).__name__}: {what} must have shape {shape} or (B, *{shape}), "
            f"got {tuple(t.shape)}"
        )

    def forward(self, x: Tensor) -> Tensor:
        """Noise-free measurement: ``(*, *in_shape) -> (*, *out_shape)``."""
        xb, single = self._split(x, self.in_shape, "x")
        y = self._forward(xb)
        return y[0] if single else y

    def adjoint(self, y: Tensor) -> Tensor:
        """Adjoint ``A^T y``: ``(*, *out_shape) -> (*, *in_shape)`` (linear operators only)."""
        if not self.linear:
            raise NotImplementedError(f"{type(self).__name__} is not linear: it has no adjoint")
        yb, single = self._split(y, self.out_shape, "y")
        x = self._adjoint(yb)
        return x[0] if single else x

    def measure(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Noisy measurement ``y = A x + sigma * e``, ``e ~ N(0, I)``."""
        y = self.forward(x)
        if self.sigma == 0:
            return y
        return y + self.sigma * _randn_like(y, generator)

    # deepinv's names, so an operator can go where a deepinv Physics is expected.
    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        """``forward(x)``."""
        return self.forward(x)

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        """``adjoint(y)``."""
        return self.adjoint(y)

    def A_dagger(self, y: Tensor) -> Tensor:  # noqa: N802
        """The pseudo-inverse ``A⁺ y``: ``(*, *out_shape) -> (*, *in_shape)``, for the
        operators where it is cheap (``Denoise``, ``Inpainting``, ``SuperResolution``)."""
        yb, single = self._split(y, self.out_shape, "y")
        x = self._dagger(yb)
        return x[0] if single else x

    def _dagger(self, y: Tensor) -> Tensor:
        raise NotImplementedError(
            f"{type(self).__name__} has no cheap pseudo-inverse; use adjoint(y) or a solver"
        )

    def _forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _adjoint(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(in_shape={self.in_shape}, out_shape={self.out_shape}, sigma={self.sigma:g})"


def _randn_like(t: Tensor, generator: torch.Generator | None) -> Tensor:
    if generator is None:
        return torch.randn_like(t)
    dev = generator.device
    return torch.randn(t.shape, generator=generator, dtype=t.dtype, device=dev).to(t.device)


class Denoise(Operator):
    """Identity forward model with additive Gaussian noise: ``y = x + sigma e``."""

    task = "denoise"
    linear = True

    def __init__(self, shape: Sequence[int], sigma: float):
        shape = _image_shape(shape)
        super().__init__(shape, shape, sigma)

    def _forward(self, x: Tensor) -> Tensor:
        return x

    def _adjoint(self, y: Tensor) -> Tensor:
        return y

    def _dagger(self, y: Tensor) -> Tensor:
        return y


STORAGES = ("dense", "seeded")


class _MatrixOperator(Operator):
    """A Gaussian matrix acting on ``vec(x)``; with ``channelwise`` one A per channel.

    ``m = round(ratio * n)`` with n = C·H·W (or H·W when ``channelwise``).
    ``storage="dense"`` draws A with torch's CPU generator from ``seed`` and keeps
    it; ``storage="seeded"`` never stores it: its entries come from Philox keyed by
    (seed, row, column) inside the kernels (``metadip.dispatch``), so large images
    need no O(mn) memory. Either way (shape, ratio, seed, storage, dtype) fixes A.
    """

    complex: bool = False

    def __init__(
        self,
        shape: Sequence[int],
        ratio: float,
        sigma: float = 0.0,
        seed: int = 0,
        channelwise: bool = False,
        dtype: torch.dtype = torch.float32,
        device: Any = None,
        storage: str = "dense",
    ):
        shape = _image_shape(shape)
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        self.ratio = _check_ratio(ratio)
        self.seed = int(seed)
        self.channelwise = bool(channelwise)
        self.storage = storage
        c, h, w = shape
        self.n = h * w if self.channelwise else c * h * w
        self.m = max(1, round(self.ratio * self.n))
        out = (c, self.m) if self.channelwise else (self.m,)
        super().__init__(shape, out, sigma)
        # An empty buffer that carries dtype and device through .to() (seeded storage
        # has no other tensor).
        self.register_buffer("_anchor", torch.empty(0, dtype=dtype, device=device))
        names = self.PLANES if storage == "dense" else ()
        for name, plane in zip(names, self._draw(dtype), strict=False):
            self.register_buffer(name, plane.to(device))

    PLANES: tuple[str, ...] = ()

    @property
    def dtype(self) -> torch.dtype:
        return self._anchor.dtype

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    def _draw(self, dtype: torch.dtype) -> tuple[Tensor, ...]:
        g = _generator(self.seed)
        if not self.complex:
            return (torch.randn(self.m, self.n, generator=g, dtype=dtype) / math.sqrt(self.m),)
        scale = 1.0 / math.sqrt(2 * self.m)
        return tuple(torch.randn(self.m, self.n, generator=g, dtype=dtype) * scale for _ in "ri")

    def planes(self) -> tuple[Tensor, ...]:
        """A as real planes ``(m, n)``: ``(A,)`` or ``(a_real, a_imag)``; materialized
        (O(mn) memory) in seeded storage."""
        if self.storage == "dense":
            return tuple(getattr(self, name) for name in self.PLANES)
        a = dispatch.seeded_gaussian(
            self.seed, self.m, self.n, complex=self.complex, dtype=self.dtype, device=self.device
        )
        return a if self.complex else (a,)

    def _flat(self, x: Tensor) -> Tensor:
        return x.reshape(-1, self.n)  # (B*C, n) channelwise, else (B, n)

    def _unflat_y(self, y: Tensor, batch: int) -> Tensor:
        return y.reshape(batch, *self.out_shape)


class CompressiveSensing(_MatrixOperator):
    """Compressive sensing ``y = A x + sigma e``, A with i.i.d. N(0, 1/m) entries.

    See ``_MatrixOperator`` for ``m``, ``channelwise`` and ``storage``. Dense A is
    the buffer ``op.matrix`` ``(m, n)`` (``planes()[0]`` also in seeded storage).
    """

    task = "cs"
    linear = True
    PLANES = ("matrix",)

    def _forward(self, x: Tensor) -> Tensor:
        flat = self._flat(x)
        if self.storage == "seeded":
            y = dispatch.seeded_measure(flat, self.seed, self.m, complex=False)
        else:
            y = flat @ self.matrix.t()
        return self._unflat_y(y, x.shape[0])

    def _adjoint(self, y: Tensor) -> Tensor:
        flat = y.reshape(-1, self.m)
        if self.storage == "seeded":
            x = dispatch.seeded_adjoint(flat, self.seed, self.n)
        else:
            x = flat @ self.matrix
        return x.reshape(y.shape[0], *self.in_shape)


class PhaseRetrieval(_MatrixOperator):
    """Compressive phase retrieval ``y = |A x + e|``, A i.i.d. complex CN(0, 1/m).

    Real and imaginary parts of A are N(0, 1/(2m)), stored (dense) as planes
    ``a_real``, ``a_imag`` ``(m, n)``; the noise e is complex Gaussian with
    ``E|e|^2 = sigma^2`` (each part N(0, sigma^2/2)); in seeded storage ``planes()``
    materializes them. See ``_MatrixOperator`` for ``m``, ``channelwise`` and ``storage``.
    """

    task = "pr"
    complex = True
    PLANES = ("a_real", "a_imag")

    def _forward(self, x: Tensor) -> Tensor:
        flat = self._flat(x)
        if self.storage == "seeded":
            y = dispatch.seeded_measure(flat, self.seed, self.m, complex=True)
        else:
            y = functional.complex_measure(flat, *self.planes())
        return self._unflat_y(y, x.shape[0])

    def measure(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``|A x + e|`` with complex Gaussian e (noise enters before the magnitude, so in
        seeded storage this one call materializes A)."""
        xb, single = self._split(x, self.in_shape, "x")
        flat = self._flat(xb)
        a_real, a_imag = self.planes()
        re = flat @ a_real.t()
        im = flat @ a_imag.t()
        if self.sigma > 0:
            s = self.sigma / math.sqrt(2)
            re = re + s * _randn_like(re, generator)
            im = im + s * _randn_like(im, generator)
        y = self._unflat_y(torch.sqrt(re * re + im * im), xb.shape[0])
        return y[0] if single else y


class Inpainting(Operator):
    """Masked observation ``y = mask ⊙ (x + sigma e)``.

    Either ``ratio`` (fraction of pixels observed, drawn from ``seed``; one mask
    for all channels) or ``box``: a missing rectangle ``(top, left, height, width)``
    or ``"center"`` for the centre third. ``out_shape == in_shape``.
    """

    task = "inpaint"
    linear = True

    def __init__(
        self,
        shape: Sequence[int],
        ratio: float | None = None,
        box: tuple[int, int, int, int] | str | None = None,
        sigma: float = 0.0,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        device: Any = None,
    ):
        shape = _image_shape(shape)
        super().__init__(shape, shape, sigma)
        _, h, w = shape
        if (ratio is None) == (box is None):
            raise ValueError("Inpainting needs exactly one of ratio= (random pixels) or box=")
        self.seed = int(seed)
        if ratio is not None:
            self.ratio = _check_ratio(ratio)
            mask = (torch.rand(h, w, generator=_generator(self.seed)) < self.ratio).to(dtype)
        else:
            if box == "center":
                box = (h // 3, w // 3, h - 2 * (h // 3), w - 2 * (w // 3))
            if isinstance(box, str) or len(box) != 4:
                raise ValueError(f"box must be (top, left, height, width) or 'center', got {box!r}")
            top, left, bh, bw = (int(v) for v in box)
            if top < 0 or left < 0 or bh < 1 or bw < 1 or top + bh > h or left + bw > w:
                raise ValueError(f"box {box} does not fit inside an image of {h}x{w}")
            mask = torch.ones(h, w, dtype=dtype)
            mask[top : top + bh, left : left + bw] = 0
        self.register_buffer("mask", mask.to(device))

    @classmethod
    def from_mask(cls, mask: Tensor, channels: int = 1, sigma: float = 0.0) -> Inpainting:
        """From a given ``(H, W)`` mask (nonzero = observed)."""
        if not isinstance(mask, Tensor) or mask.dim() != 2:
            raise ValueError(
                f"mask must be a 2-D (H, W) tensor, got {getattr(mask, 'shape', mask)}"
            )
        op = cls((channels, *mask.shape), ratio=1.0, sigma=sigma)
        op.ratio = None
        op.mask = (mask != 0).to(
            torch.get_default_dtype() if not mask.is_floating_point() else mask.dtype
        )
        return op

    def _forward(self, x: Tensor) -> Tensor:
        return x * self.mask

    def _adjoint(self, y: Tensor) -> Tensor:
        return y * self.mask

    def _dagger(self, y: Tensor) -> Tensor:
        return y * self.mask  # a 0/1 mask is its own pseudo-inverse

    def measure(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``mask ⊙ (x + sigma e)``: unobserved pixels are exactly 0."""
        if self.sigma == 0:
            return self.forward(x)
        return self.forward(x + self.sigma * _randn_like(x, generator))


def _gaussian_kernel(size: int, std: float, dtype: torch.dtype) -> Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * std**2))
    k = torch.outer(g, g)
    return (k / k.sum()).to(dtype)


class Blur(Operator):
    """Gaussian blur ``y = k * x + sigma e`` with zero boundary ('same' size).

    The kernel is ``kernel_size``×``kernel_size`` (odd), std ``kernel_sigma`` in
    pixels; the adjoint is the transposed convolution, so ⟨Ax, y⟩ = ⟨x, Aᵀy⟩ exactly.
    """

    task = "blur"
    linear = True

    def __init__(
        self,
        shape: Sequence[int],
        kernel_size: int = 9,
        kernel_sigma: float = 2.0,
        sigma: float = 0.0,
        dtype: torch.dtype = torch.float32,
        device: Any = None,
    ):
        shape = _image_shape(shape)
        super().__init__(shape, shape, sigma)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        if not kernel_sigma > 0:
            raise ValueError(f"kernel_sigma must be > 0, got {kernel_sigma}")
        self.kernel_size = int(kernel_size)
        self.kernel_sigma = float(kernel_sigma)
        k = _gaussian_kernel(self.kernel_size, self.kernel_sigma, dtype)
        self.register_buffer("kernel", k.expand(shape[0], 1, *k.shape).contiguous().to(device))

    def _forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.kernel, padding=self.kernel_size // 2, groups=self.in_shape[0])

    def _adjoint(self, y: Tensor) -> Tensor:
        return F.conv_transpose2d(
            y, self.kernel, padding=self.kernel_size // 2, groups=self.in_shape[0]
        )


class SuperResolution(Operator):
    """Box downsampling by ``factor``: ``y = mean over factor×factor blocks of x + sigma e``.

    H and W must be multiples of ``factor``; ``out_shape = (C, H/factor, W/factor)``.
    """

    task = "sr"
    linear = True

    def __init__(self, shape: Sequence[int], factor: int, sigma: float = 0.0):
        shape = _image_shape(shape)
        c, h, w = shape
        if factor < 1 or h % factor or w % factor:
            raise ValueError(
                f"SuperResolution needs H and W divisible by factor; got {h}x{w}, factor {factor}"
            )
        self.factor = int(factor)
        super().__init__(shape, (c, h // factor, w // factor), sigma)

    def _forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.factor)

    def _adjoint(self, y: Tensor) -> Tensor:
        f = self.factor
        return y.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1) / (f * f)

    def _dagger(self, y: Tensor) -> Tensor:
        # A Aᵀ = I / f², so A⁺ = Aᵀ (A Aᵀ)⁻¹ = f² Aᵀ: nearest-neighbour upsampling.
        return self._adjoint(y) * self.factor**2


class LinearOperator(Operator):
    """A user-supplied forward model (build with the classmethods): batched callables,
    or a dense matrix kept as the buffer ``matrix``."""

    linear = True

    def __init__(
        self,
        forward: Callable[[Tensor], Tensor] | None,
        adjoint: Callable[[Tensor], Tensor] | None,
        in_shape: Sequence[int],
        out_shape: Sequence[int],
        sigma: float = 0.0,
        matrix: Tensor | None = None,
    ):
        super().__init__(in_shape, out_shape, sigma)
        self._fwd = forward
        self._adj = adjoint
        self.linear = adjoint is not None or matrix is not None
        self.register_buffer("matrix", matrix)

    @classmethod
    def from_matrix(cls, A: Tensor, in_shape: Sequence[int], sigma: float = 0.0) -> LinearOperator:
        """``y = A vec(x)`` for a dense ``(m, n)`` matrix, ``n = prod(in_shape)``."""
        if not isinstance(A, Tensor) or A.dim() != 2:
            raise ValueError(f"A must be a 2-D torch.Tensor (m, n), got {getattr(A, 'shape', A)}")
        in_shape = tuple(int(s) for s in in_shape)
        n = math.prod(in_shape)
        if A.shape[1] != n:
            raise ValueError(f"A has {A.shape[1]} columns but in_shape {in_shape} has {n} entries")
        return cls(None, None, in_shape, (A.shape[0],), sigma, matrix=A)

    @classmethod
    def from_callables(
        cls,
        forward: Callable[[Tensor], Tensor],
        adjoint: Callable[[Tensor], Tensor] | None,
        in_shape: Sequence[int],
        out_shape: Sequence[int],
        sigma: float = 0.0,
    ) -> LinearOperator:
        """Wraps batched callables ``forward: (B, *in_shape) -> (B, *out_shape)`` and adjoint."""
        if not callable(forward) or (adjoint is not None and not callable(adjoint)):
            raise TypeError("forward and adjoint must be callables (adjoint may be None)")
        return cls(forward, adjoint, in_shape, out_shape, sigma)

    def _forward(self, x: Tensor) -> Tensor:
        if self.matrix is not None:
            return x.reshape(x.shape[0], -1) @ self.matrix.t()
        return self._checked(self._fwd(x), (x.shape[0], *self.out_shape), "forward")

    def _adjoint(self, y: Tensor) -> Tensor:
        if self.matrix is not None:
            return (y @ self.matrix).reshape(y.shape[0], *self.in_shape)
        return self._checked(self._adj(y), (y.shape[0], *self.in_shape), "adjoint")

    def _checked(self, out: Tensor, shape: Shape, what: str) -> Tensor:
        if not isinstance(out, Tensor) or tuple(out.shape) != shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out)
            raise ValueError(f"the user-supplied {what} returned {got}, expected {shape}")
        return out


class PhysicsAdapter(Operator):
    """Wraps an object with ``.A(x)`` and optionally ``.A_adjoint(y)`` (e.g. a deepinv Physics).

    ``in_shape`` must be given (such objects do not declare it); ``out_shape`` is
    found by applying ``A`` once to zeros on the physics' own device and dtype (those of
    its first floating tensor when it is a module; else CPU float32). ``A`` takes and
    returns batched tensors. A physics that is a ``torch.nn.Module`` moves with the
    adapter: in place with ``adapter.to(...)``, as a deep copy with ``moved(...)``
    (which ``reconstruct`` uses, so your physics stays where it is).
    """

    def __init__(self, physics: Any, in_shape: Sequence[int], sigma: float | None = None):
        if not callable(getattr(physics, "A", None)):
            raise TypeError(f"expected an object with a callable .A(x), got {type(physics)}")
        # Not a submodule: moving this adapter must not move the caller's object.
        object.__setattr__(self, "physics", physics)
        self.linear = callable(getattr(physics, "A_adjoint", None))
        in_shape = tuple(int(s) for s in in_shape)
        if sigma is None:
            sigma = float(getattr(getattr(physics, "noise_model", None), "sigma", 0.0) or 0.0)
        tensors = [t for t in _module_tensors(physics) if t.is_floating_point()]
        like = tensors[0] if tensors else torch.empty(0)
        with torch.no_grad():
            probe = physics.A(like.new_zeros(1, *in_shape))
        super().__init__(in_shape, tuple(probe.shape[1:]), sigma)

    def _apply(self, fn: Callable, recurse: bool = True) -> PhysicsAdapter:  # type: ignore[override]
        # nn.Module.to / .double / .cuda all come here: move the wrapped physics too.
        if isinstance(self.physics, nn.Module):
            self.physics._apply(fn)
        return super()._apply(fn, recurse)

    def _forward(self, x: Tensor) -> Tensor:
        return self.physics.A(x)

    def _adjoint(self, y: Tensor) -> Tensor:
        return self.physics.A_adjoint(y)


class Stacked(Operator):
    """One operator per batch item: ``forward(x)[b] = ops[b].forward(x[b])``.

    Every operator must have the same ``in_shape`` and ``out_shape``; inputs must be
    batches ``(len(ops), *in_shape)`` (a different batch size is an error).
    """

    def __init__(self, ops: Sequence[Operator]):
        ops = list(ops)
        if not ops:
            raise ValueError("Stacked needs at least one operator, got none")
        bad = [o for o in ops if not isinstance(o, Operator)]
        if bad:
            raise TypeError(f"Stacked takes metadip Operators, got {type(bad[0]).__name__}")
        first = ops[0]
        for i, o in enumerate(ops):
            if (o.in_shape, o.out_shape) != (first.in_shape, first.out_shape):
                raise ValueError(
                    f"operator {i} maps {o.in_shape} -> {o.out_shape} but operator 0 maps "
                    f"{first.in_shape} -> {first.out_shape}; stacked operators must agree"
                )
        self.linear = all(o.linear for o in ops)
        self.task = first.task if all(o.task == first.task for o in ops) else "custom"
        super().__init__(first.in_shape, first.out_shape, max(o.sigma for o in ops))
        self.ops = nn.ModuleList(ops)

    def _items(self, t: Tensor, what: str) -> None:
        if t.shape[0] != len(self.ops):
            raise ValueError(
                f"Stacked holds {len(self.ops)} operators but {what} has batch size "
                f"{t.shape[0]}; pass one item per operator"
            )

    def _forward(self, x: Tensor) -> Tensor:
        self._items(x, "x")
        return torch.cat([o.forward(x[i : i + 1]) for i, o in enumerate(self.ops)])

    def _adjoint(self, y: Tensor) -> Tensor:
        self._items(y, "y")
        return torch.cat([o.adjoint(y[i : i + 1]) for i, o in enumerate(self.ops)])

    def measure(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Each item measured by its own operator (its own noise model)."""
        xb, single = self._split(x, self.in_shape, "x")
        self._items(xb, "x")
        y = torch.cat([o.measure(xb[i : i + 1], generator) for i, o in enumerate(self.ops)])
        return y[0] if single else y

    def __repr__(self) -> str:
        return f"Stacked({len(self.ops)} x {self.ops[0]!r})"


def _module_tensors(obj: Any) -> list[Tensor]:
    """The parameters and buffers of ``obj`` when it is a module (else none)."""
    if not isinstance(obj, nn.Module):
        return []
    return list(obj.parameters()) + list(obj.buffers())


def _clone(module: nn.Module) -> nn.Module:
    """A copy of ``module`` that shares its tensors but not its tensor tables, so that
    moving the copy leaves the original where it is (a wrapped physics module is deep
    copied: its tables are not ours to split)."""
    new = copy.copy(module)
    new._parameters = dict(module._parameters)
    new._buffers = dict(module._buffers)
    new._modules = {k: None if m is None else _clone(m) for k, m in module._modules.items()}
    if isinstance(module, PhysicsAdapter) and isinstance(module.physics, nn.Module):
        object.__setattr__(new, "physics", copy.deepcopy(module.physics))
    return new


def moved(op: Operator, device: Any = None, dtype: torch.dtype | None = None) -> Operator:
    """``op`` on ``device`` / ``dtype`` without touching the caller's operator: ``op``
    itself when its tensors are there already, else a moved copy (``op.to`` moves in
    place, as for any module)."""
    target = torch.device(device) if device is not None else None
    tensors = _module_tensors(op)
    if isinstance(op, PhysicsAdapter):
        tensors += _module_tensors(op.physics)
    if all(
        (target is None or t.device == target)
        and (dtype is None or not t.is_floating_point() or t.dtype == dtype)
        for t in tensors
    ):
        return op
    return _clone(op).to(device=device, dtype=dtype)


def as_operator(op: Any, in_shape: Sequence[int] | None = None) -> Operator:
    """Accepts a metadip ``Operator``, any object with ``forward`` and ``in_shape`` /
    ``out_shape``, an object with ``.A`` (deepinv Physics) or a callable ``x -> y``.

    For the last two, ``in_shape`` ``(C, H, W)`` is required. All take and return
    batched tensors ``(B, ...)``.
    """
    if isinstance(op, Operator):
        if in_shape is not None and tuple(in_shape) != op.in_shape:
            raise ValueError(f"in_shape {tuple(in_shape)} contradicts op.in_shape {op.in_shape}")
        return op
    if callable(getattr(op, "forward", None)) and hasattr(op, "in_shape"):
        return LinearOperator.from_callables(
            op.forward,
            op.adjoint if callable(getattr(op, "adjoint", None)) else None,
            op.in_shape,
            op.out_shape,
            getattr(op, "sigma", 0.0),
        )
    if callable(getattr(op, "A", None)) or callable(op):
        if in_shape is None:
            raise ValueError(
                f"{type(op).__name__} does not declare its input shape: pass in_shape=(C, H, W)"
            )
        in_shape = _image_shape(in_shape, "in_shape")
        if callable(getattr(op, "A", None)):
            return PhysicsAdapter(op, in_shape)
        with torch.no_grad():
            out_shape = tuple(op(torch.zeros(1, *in_shape)).shape[1:])
        return LinearOperator.from_callables(op, None, in_shape, out_shape)
    raise TypeError(
        "op must be a metadip Operator, an object with .A(x) (and optionally .A_adjoint(y)), "
        f"or a callable x -> y; got {type(op).__name__} without forward/A"
    )
