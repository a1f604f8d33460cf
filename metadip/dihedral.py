"""The eight symmetries of the square (flips, 90° rotations) on image tensors, for the
geometric self-ensemble of an image-input network.

Transform ``i`` in ``0..7`` flips the width axis if bit 0 is set, the height axis if bit 1
is set, then swaps height and width if bit 2 is set. So the first 4 keep the image's shape
(any H, W) and all 8 together are the dihedral group D4. The ensemble of a map ``f`` is
``(1/n) Σ_i T_i⁻¹ f(T_i x)``: it averages the network's orientation-dependent errors
(the self-ensemble of EDSR, Lim et al. 2017).
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["ENSEMBLE_SIZES", "check_ensemble", "transform", "untransform"]

ENSEMBLE_SIZES = (1, 2, 4, 8)


def check_ensemble(n: object) -> int:
    """``n`` when it is a valid ensemble size (1, 2, 4 or 8 transforms), else ValueError."""
    if isinstance(n, bool) or not isinstance(n, int) or n not in ENSEMBLE_SIZES:
        raise ValueError(f"ensemble must be one of {ENSEMBLE_SIZES} (transforms), got {n!r}")
    return n


def _flip_dims(i: int) -> list[int]:
    return [d for bit, d in ((1, -1), (2, -2)) if i & bit]


def transform(x: Tensor, i: int) -> Tensor:
    """``T_i x`` for ``x`` ``(..., H, W)``; ``(..., W, H)`` for ``i >= 4``."""
    dims = _flip_dims(i)
    x = x.flip(dims) if dims else x
    return x.transpose(-2, -1) if i & 4 else x


def untransform(x: Tensor, i: int) -> Tensor:
    """``T_i⁻¹ x``: undoes ``transform(·, i)``."""
    x = x.transpose(-2, -1) if i & 4 else x
    dims = _flip_dims(i)
    return x.flip(dims) if dims else x
