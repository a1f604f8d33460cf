"""metadip: Deep Image Prior reconstruction from a meta-learned initialization.

import metadip
op = metadip.Denoise((3, 128, 128), sigma=25 / 255)
rec = metadip.reconstruct(op.measure(x), op)   # rec.image: (3, 128, 128)
"""

from metadip.allocator import tune_allocator
from metadip.api import Reconstruction, reconstruct
from metadip.init import MetaInit
from metadip.meta import meta_gradient
from metadip.metrics import psnr, ssim
from metadip.operators import (
    Blur,
    CompressiveSensing,
    Denoise,
    Inpainting,
    LinearOperator,
    Operator,
    PhaseRetrieval,
    PhysicsAdapter,
    SuperResolution,
    as_operator,
)
from metadip.shipped import load_init

__version__ = "0.1.0"

__all__ = [
    "Blur",
    "CompressiveSensing",
    "Denoise",
    "Inpainting",
    "LinearOperator",
    "MetaInit",
    "Operator",
    "PhaseRetrieval",
    "PhysicsAdapter",
    "Reconstruction",
    "SuperResolution",
    "as_operator",
    "load_init",
    "meta_gradient",
    "psnr",
    "reconstruct",
    "ssim",
    "tune_allocator",
]
