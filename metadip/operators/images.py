"""Image-domain operators: denoising, inpainting, blur, super-resolution."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from metadip.operators.base import Operator, _check_ratio, _generator, _image_shape, _randn_like

__all__ = ["Blur", "Denoise", "Inpainting", "SuperResolution"]


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
