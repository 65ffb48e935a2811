"""Host memory for CPU training. glibc hands every block above its mmap threshold back to the kernel when
it is freed, so a training loop that frees and reallocates the same activation buffers every step
takes a page fault on every page of them again, step after step. The cost grows with how much a
module frees and reallocates per step (a lean module, which rebuilds concatenations in backward, more
than most). Keeping freed memory in the process, as jemalloc and tcmalloc do, removes it."""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Have glibc serve large blocks from its heap and keep freed ones for reuse: the process's resident
    memory stays near its peak instead of being returned and faulted in again. Returns whether it
    took effect (False where the C library is not glibc). Affects the whole process: call it at the
    entry of a training or benchmark run."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
