"""The Deep Decoder (Heckel & Hand, 2019): an under-parameterized image generator.

From a fixed noise tensor ``(B, k, H/2^(d−1), W/2^(d−1))``, each of ``d − 1`` layers is
``1×1 conv → bilinear ×2 upsampling → ReLU → channel normalization``; then
``1×1 conv → ReLU → normalization → 1×1 conv → sigmoid``. With k channels it has about
``d·k²`` weights, fewer than the pixels it makes, so it cannot fit noise the way an
over-parameterized DIP does and needs no early stopping in the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metadip.layers import Norm

__all__ = ["DeepDecoder", "decoder_input_size"]


def decoder_input_size(height: int, width: int, depth: int) -> tuple[int, int]:
    """The input's ``(h, w)`` for an ``height``×``width`` image: ``/ 2^(depth−1)``, which
    must divide both exactly (the decoder only doubles)."""
    f = 2 ** (depth - 1)
    if height % f or width % f or height < f or width < f:
        raise ValueError(
            f"a deep decoder of depth {depth} makes images whose height and width are "
            f"multiples of 2**(depth-1) = {f}; got {height}x{width}: crop or pad the image, "
            "or use a smaller depth"
        )
    return height // f, width // f


class DeepDecoder(nn.Module):
    """``(B, k, h, w) -> (B, Cout, h·2^(d−1), w·2^(d−1))``; ``groups = G`` networks side
    by side as grouped 1×1 convolutions (input ``(1, G·k, h, w)``), as in ``SkipNet``."""

    def __init__(self, out_channels: int, width: int = 64, depth: int = 6, groups: int = 1):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.depth, self.groups, self.width = depth, groups, width
        k = width * groups
        # Biases before a normalization get no gradient; Heckel & Hand have none.
        self.convs = nn.ModuleList(
            nn.Conv2d(k, k, 1, bias=False, groups=groups) for _ in range(depth)
        )
        self.norms = nn.ModuleList(Norm(k) for _ in range(depth))
        self.out = nn.Conv2d(k, out_channels * groups, 1, groups=groups)

    def check_size(self, height: int, width: int) -> None:
        """Raises unless the decoder can make an image of this size."""
        decoder_input_size(height, width, self.depth)

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            h = conv(h)
            if i + 1 < self.depth:
                h = F.interpolate(h, scale_factor=2.0, mode="bilinear", align_corners=False)
            h = norm(torch.relu(h))
        return torch.sigmoid(self.out(h))
