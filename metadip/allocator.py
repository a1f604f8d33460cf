"""The C allocator's settings for CPU fits: keep freed tensor memory in the process.

PyTorch's CPU tensors come straight from ``malloc``. glibc's defaults hand large blocks
(from 128 KiB, raised on the fly to the largest one freed) back to the kernel on
``free`` — unmapped, or trimmed off the heap's top once more than twice that is free —
so the next step's tensor of the same size is mapped afresh and its pages fault in
again on first touch. A fitting step allocates and frees tens of such tensors (a
32 × 128² float32 activation is 2 MiB), and page faults then take a measurable share of
it (``benchmarks/allocator_ab.py``). Raising both thresholds keeps that memory in the
heap for reuse: the process holds on to its peak working set instead of returning it.

This is process-wide, so the library never does it on import; the ``metadip`` command
does it at start (``METADIP_MALLOC=0`` turns that off), and a script opts in with
``tune_allocator()``. A no-op that says why wherever the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

__all__ = ["ENV", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_allocator", "wanted"]

ENV = "METADIP_MALLOC"
# glibc's ceiling for M_MMAP_THRESHOLD on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX): blocks
# below it come from the heap. Larger ones (a 48 × 512² activation) are still mapped.
MMAP_THRESHOLD = 32 * 1024**2
# Free memory at the heap's top beyond this goes back to the kernel.
TRIM_THRESHOLD = 1024**3
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, <malloc.h>


def wanted() -> bool:
    """Whether ``METADIP_MALLOC`` leaves the command's tuning on (unset, ``1``, ``on``);
    ``0`` / ``off`` turn it off; anything else is an error."""
    value = os.environ.get(ENV, "1").strip().lower()
    if value in ("1", "on", "true", "yes"):
        return True
    if value in ("0", "off", "false", "no"):
        return False
    raise ValueError(f"{ENV} must be 1/on or 0/off, got {os.environ[ENV]!r}")


def tune_allocator(
    mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD
) -> tuple[bool, str]:
    """Sets glibc's ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` (bytes) for this process
    with ``mallopt``; returns ``(applied, reason)``. Setting either also turns off glibc's
    dynamic threshold, so the values stay as given."""
    if not 0 < mmap_threshold <= MMAP_THRESHOLD:
        raise ValueError(
            f"mmap_threshold must be in (0, {MMAP_THRESHOLD}] bytes (glibc's ceiling), "
            f"got {mmap_threshold}"
        )
    if not 0 < trim_threshold < 2**31:
        raise ValueError(
            f"trim_threshold must be in (0, 2**31) bytes (an int), got {trim_threshold}"
        )
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False, f"not glibc ({platform.system()}, {platform.libc_ver()[0] or 'unknown'} libc)"
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    ok_mmap = libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(mmap_threshold))
    ok_trim = libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(trim_threshold))
    if not (ok_mmap and ok_trim):
        return False, f"mallopt refused (mmap: {ok_mmap}, trim: {ok_trim})"
    return True, f"mmap threshold {mmap_threshold} B, trim threshold {trim_threshold} B"
