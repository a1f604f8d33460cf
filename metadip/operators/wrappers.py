"""User-supplied models (matrices, callables, deepinv Physics), per-item stacks, and
moving operators without touching the caller's."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from metadip.operators.base import Operator, Shape, _image_shape

__all__ = ["LinearOperator", "PhysicsAdapter", "Stacked", "as_operator", "moved"]


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

    @property
    def has_start(self) -> bool:
        return all(o.has_start for o in self.ops)

    def _start(self, y: Tensor) -> Tensor:
        self._items(y, "y")
        return torch.cat([o.estimate_start(y[i : i + 1]) for i, o in enumerate(self.ops)])

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
