"""Keep freed host memory mapped while training on the CPU (glibc only): `--keep-freed-memory`.

glibc gives the activations a backward pass frees back to the kernel, and the next forward pass faults them in
again page by page; PyTorch's CPU tuning guide swaps in jemalloc or tcmalloc for this, and telling glibc to keep
what it has does the same without a preload. It is process-wide, so the library never sets it by itself: the
commands do, when asked (measurements: docs/benchmarks.md)."""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, <malloc.h>
MMAP_THRESHOLD = 32 * 2 ** 20  # the largest glibc accepts: blocks up to 32 MiB come from the heap, which is kept
TRIM_THRESHOLD = 2 ** 30       # give memory back only when a whole GiB at the top of the heap is free


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed heap memory mapped. Returns whether it was applied (False off Linux/glibc).

    Process-wide and not undone: the process's resident memory stays near its peak until it exits."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl or another libc without glibc's mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
