"""Compiles every Triton kernel of one op for an NVIDIA sm_90 target, on any machine.

    python tests/triton_aot.py tv|fourier|cmeasure

Run by the kernel tests in a subprocess without ``TRITON_INTERPRET`` (the interpreter
that runs the kernels on the CPU in the same test session patches triton.language).
Each kernel is compiled to PTX and a cubin (``triton.compile`` with an explicit
``GPUTarget``) for float32 and float64, with the tile sizes the launchers use on CUDA
and every constexpr variant the launchers send, which catches what the interpreter
cannot: type errors in lowering, unsupported float64 ops, register or shared-memory
limits. Exits non-zero, with the kernel and the compiler's message, on a failure.
"""

from __future__ import annotations

import importlib
import itertools
import os
import sys

os.environ.pop("TRITON_INTERPRET", None)

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
DTYPES = ("fp32", "fp64")
# Shared memory a block may use on sm_90 (227 KiB, with the opt-in Triton asks for).
SHARED_LIMIT = 232448


def _specs(op: str, dt: str) -> list[tuple[str, dict[str, str], dict[str, object]]]:
    """(kernel, runtime argument types, constexprs) as the CUDA launchers call them.
    Python ints reach a kernel as i32; Python floats as fp32 unless the parameter is
    annotated ``tl.float64``, which every float parameter must be (see ``_scalars``)."""
    p = f"*{dt}"
    if op == "tv":
        blocks = {"BLOCK_H": 8, "BLOCK_W": 64}
        plane = {"H": "i32", "W": "i32", "n_tiles_w": "i32"}
        return [
            ("_fwd", {"x_ptr": p, "grad_ptr": p, "part_ptr": p, **plane, "n_tiles": "i32",
                      "eps": "fp64"}, blocks),
            ("_bwd", {"x_ptr": p, "w_ptr": p, "out_ptr": p, **plane, "eps": "fp64"}, blocks),
        ]  # fmt: skip
    if op == "fourier":
        dims = {"K": "i32", "H": "i32", "W": "i32"}
        return [
            ("_fwd", {"b_ptr": p, "out_ptr": p, **dims}, {"BLOCK": 1024}),
            ("_bwd", {"g_ptr": p, "b_ptr": p, "part_ptr": p, **dims, "n_tiles": "i32"},
             {"BLOCK": 1024}),
        ]  # fmt: skip
    if op == "cmeasure":
        sizes = {"B": "i32", "M": "i32", "N": "i32", "seed": "i32", "scale": "fp64"}
        out = []
        for seeded, planes in itertools.product((False, True), (1, 2)):
            for extra in (False, True) if planes == 2 else (False,):
                fwd = {
                    "SEEDED": seeded,
                    "PLANES": planes,
                    "MAG": extra,
                    "BLOCK_B": 16,
                    "BLOCK_M": 64,
                    "BLOCK_K": 64,
                }
                bwd = {
                    "SEEDED": seeded,
                    "PLANES": planes,
                    "PHASE": extra,
                    "BLOCK_B": 16,
                    "BLOCK_N": 64,
                    "BLOCK_K": 64,
                }
                out.append(
                    (
                        "_fwd",
                        {
                            "x_ptr": p,
                            "ar_ptr": p,
                            "ai_ptr": p,
                            "z_ptr": p,
                            "zi_ptr": p,
                            "y_ptr": p,
                            **sizes,
                        },
                        fwd,
                    )
                )
                out.append(
                    (
                        "_bwd",
                        {
                            "w_ptr": p,
                            "wi_ptr": p,
                            "g_ptr": p,
                            "ar_ptr": p,
                            "ai_ptr": p,
                            "out_ptr": p,
                            **sizes,
                        },
                        bwd,
                    )
                )
        for planes in (1, 2):
            out.append(
                (
                    "_materialize",
                    {
                        "a_ptr": p,
                        "ai_ptr": p,
                        "M": "i32",
                        "N": "i32",
                        "seed": "i32",
                        "scale": "fp64",
                    },
                    {"PLANES": planes, "BLOCK_M": 32, "BLOCK_N": 64},
                )
            )
        return out  # fmt: skip
    raise SystemExit(f"unknown op {op!r}; expected tv, fourier or cmeasure")


def _scalars(fn, args: dict[str, str]) -> list[str]:
    """Float scalar parameters the kernel does not annotate ``tl.float64``: CUDA would
    receive them as fp32, a 1e-9 relative error in float64 results."""
    declared = {p.name: p.annotation_type for p in fn.params}
    return [k for k, t in args.items() if t == "fp64" and declared.get(k) != "fp64"]


def main(op: str) -> int:
    module = importlib.import_module(f"metadip.kernels.{op}")
    failed = 0
    for dt in DTYPES:
        for name, args, constexprs in _specs(op, dt):
            signature = {**args, **dict.fromkeys(constexprs, "constexpr")}
            label = f"{op}.{name} {dt} {constexprs}"
            loose = _scalars(getattr(module, name), args)
            if loose:
                failed += 1
                print(f"FAILED {label}: {loose} not annotated tl.float64", file=sys.stderr)
                continue
            try:
                src = triton.compiler.ASTSource(
                    fn=getattr(module, name), signature=signature, constexprs=constexprs
                )
                kernel = triton.compile(src, target=TARGET)
            except Exception as exc:  # report every failing variant, not just the first
                failed += 1
                print(f"FAILED {label}: {type(exc).__name__}: {exc}", file=sys.stderr)
                continue
            if kernel.metadata.shared > SHARED_LIMIT:
                failed += 1
                print(
                    f"FAILED {label}: {kernel.metadata.shared} B of shared memory", file=sys.stderr
                )
                continue
            print(
                f"ok {label}: {len(kernel.asm['cubin'])} B cubin, shared {kernel.metadata.shared}"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
