"""Packaging: the top-level ``kernels/`` folder ships as ``metadip.kernels``; ``csrc/``
builds the optional extensions ``metadip._C`` (C++, ATen's thread pool) and, when the
installed torch has CUDA and nvcc is found, ``metadip._C_cuda`` (the same plus the CUDA
kernels), each on its own so a failing CUDA build keeps the C++ one.
``METADIP_NO_EXT=1`` skips both. A build that fails only warns: metadip then runs on
its Triton / pure-torch backends
(``METADIP_STRICT_EXT=1`` makes it an error, for the compile check in ``.ci/``).
torch must be importable at build time (``pip install --no-build-isolation``).
"""

from __future__ import annotations

import os
import sys
import warnings
from glob import glob

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _warn(msg: str) -> None:
    # pip hides warnings from successful builds unless -v; stderr is the best we have.
    warnings.warn(msg, stacklevel=1)
    print(f"metadip setup: {msg}", file=sys.stderr)


def _extension_kwargs() -> dict:
    if os.environ.get("METADIP_NO_EXT", "0") == "1":
        _warn("METADIP_NO_EXT=1: skipping the C++/CUDA extension metadip._C")
        return {}
    try:
        import torch
        from torch.utils import cpp_extension as ce
    except Exception as exc:  # torch missing: install the pure-Python package.
        _warn(f"torch is not importable at build time ({exc}); skipping metadip._C")
        return {}

    def rel(pattern: str) -> list[str]:
        return sorted(os.path.relpath(p, ROOT) for p in glob(os.path.join(ROOT, pattern)))

    sources = ["csrc/bindings.cpp", *rel("csrc/*/*_cpu.cpp")]
    # -fno-math-errno lets sqrt vectorize (errno is never read).
    cxx = ["-O3", "-fopenmp", "-fno-math-errno"]
    # Two extensions, so that a CUDA build failure never costs the CPU kernels: metadip._C
    # (C++ only, always) and, where torch has CUDA and nvcc is found, metadip._C_cuda (the
    # same bindings with the CUDA kernels too), which metadip._ops prefers when it imports.
    exts = [
        ce.CppExtension(
            "metadip._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"]
        )
    ]
    if torch.version.cuda is not None and ce.CUDA_HOME is not None:
        exts.append(
            ce.CUDAExtension(
                "metadip._C_cuda",
                sources + rel("csrc/*/*_cuda.cu"),
                define_macros=[("WITH_CUDA", None)],
                extra_compile_args={"cxx": cxx, "nvcc": ["-O3"]},
                extra_link_args=["-fopenmp"],
            )
        )

    # METADIP_STRICT_EXT=1 (the CUDA compile check in .ci/) makes a failed build an error.
    strict = os.environ.get("METADIP_STRICT_EXT", "0") == "1"

    class SafeBuildExt(ce.BuildExtension):
        """Turns a failed compile into a warning so installation never breaks."""

        def run(self) -> None:
            try:
                super().run()
            except Exception as exc:
                if strict:
                    raise
                _warn(f"building metadip._C failed ({exc}); falling back to Triton/torch")

        def build_extension(self, extension) -> None:
            try:
                super().build_extension(extension)
            except Exception as exc:
                if strict:
                    raise
                _warn(f"building {extension.name} failed ({exc}); falling back to Triton/torch")

    return {"ext_modules": exts, "cmdclass": {"build_ext": SafeBuildExt}}


setup(
    packages=[
        "metadip",
        "metadip.classical",
        "metadip.evaluate",
        "metadip.operators",
        "metadip.train",
        "metadip.kernels",
    ],
    package_dir={"metadip": "metadip", "metadip.kernels": "kernels"},
    package_data={"metadip": ["weights/*.safetensors", "weights/*.json"]},
    **_extension_kwargs(),
)
