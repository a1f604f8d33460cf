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

from metadip.operators.base import Operator, gram_norm, require_linear
from metadip.operators.images import Blur, Denoise, Inpainting, SuperResolution
from metadip.operators.matrix import STORAGES, CompressiveSensing, PhaseRetrieval
from metadip.operators.wrappers import LinearOperator, PhysicsAdapter, Stacked, as_operator, moved

__all__ = [
    "STORAGES",
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
    "gram_norm",
    "moved",
    "require_linear",
]
