"""The fitting step's update rules as small ``(init, update)`` transforms (as torchopt's
``alias`` module writes its optimizers), so ``inner.step`` holds no rule branches and a
new rule is one entry of ``RULES``.

A rule keeps named per-parameter *slots* (its state tensors) and maps one parameter
tensor, its gradient, its slots and its step size to the new parameter and slots:

    sgd:  m ← μ m + g;  θ ← θ − lr m                     (slots m)
    adam: m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²;
          θ ← θ − lr m̂ / (√v̂ + ε), m̂ = m / (1−β1^(t+1)), v̂ = v / (1−β2^(t+1))   (slots m, v)

Every update is differentiable in θ, g, the slots, lr and the momentum, so a
meta-gradient can flow through it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["RULES", "Rule", "get_rule"]

Slots = dict[str, Tensor]


@dataclass(frozen=True)
class Rule:
    """An update rule: ``slots`` names its per-parameter state; ``update(p, g, slots,
    lr, t, hyper) -> (new p, new slots)`` with ``t`` the 0-based step and ``hyper``
    supplying ``momentum`` (sgd) or ``betas`` / ``adam_eps`` (adam). ``backtrack``:
    whether a fit undoes loss jumps (the original DIP code does so for its Adam)."""

    name: str
    slots: tuple[str, ...]
    update: Callable[[Tensor, Tensor, Slots, Any, int, Any], tuple[Tensor, Slots]]
    backtrack: bool = False

    def init(self, params: dict[str, Tensor]) -> dict[str, Slots]:
        """Zero slots: ``{slot: {name: zeros_like(param)}}``."""
        return {s: {k: torch.zeros_like(v) for k, v in params.items()} for s in self.slots}


def _sgd(p: Tensor, g: Tensor, slots: Slots, lr: Any, t: int, hyper: Any) -> tuple:
    m = hyper.momentum * slots["m"] + g
    return p - lr * m, {"m": m}


def _adam(p: Tensor, g: Tensor, slots: Slots, lr: Any, t: int, hyper: Any) -> tuple:
    b1, b2 = hyper.betas
    m = b1 * slots["m"] + (1 - b1) * g
    v = b2 * slots["v"] + (1 - b2) * g * g
    c1, c2 = 1 - b1 ** (t + 1), 1 - b2 ** (t + 1)
    return p - lr * (m / c1) / (torch.sqrt(v / c2) + hyper.adam_eps), {"m": m, "v": v}


RULES: dict[str, Rule] = {
    "sgd": Rule("sgd", ("m",), _sgd),
    "adam": Rule("adam", ("m", "v"), _adam, backtrack=True),
}


def get_rule(name: str) -> Rule:
    """The rule called ``name``; a clear error for any other name."""
    if name not in RULES:
        raise ValueError(f"unknown update rule {name!r}; choose from {', '.join(RULES)}")
    return RULES[name]
