"""Keeping freed memory for reuse: CPU inference without a page fault for every large tensor.

glibc's ``malloc`` serves allocations above 32 MB (and, before its threshold adapts, far smaller
ones) with fresh ``mmap`` pages and gives them back to the kernel on ``free``. A network's
activations at batch 32 and 224 px are tens of megabytes each, so every forward pass faults in,
zeroes and unmaps hundreds of megabytes: on a 2-core machine that is about 40 % of the CPU time
and most of the timing noise (``docs/performance.md``). :func:`keep_freed_memory` tells glibc to
serve every allocation from its heap and never to trim it, so a second pass reuses the pages of
the first. The cost: the resident set stays at its peak instead of shrinking between batches.

The ``rtsal`` command calls it at start-up; library users call it once themselves. Set
``RTSAL_MALLOC=system`` to keep the C library's defaults.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1

_state = {"tuned": False}


def keep_freed_memory() -> bool:
    """Serve allocations from the heap and never trim it (glibc on Linux only).

    Returns True when the setting took effect; False elsewhere (other C libraries, macOS,
    Windows) or when ``RTSAL_MALLOC=system`` is set. Safe to call more than once.
    """
    if _state["tuned"]:
        return True
    if os.environ.get("RTSAL_MALLOC", "").strip().lower() == "system":
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; both must hold or the heap would still shrink and refault
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _INT_MAX) == 1
    _state["tuned"] = ok
    return ok


def allocator_description() -> str:
    """One phrase for benchmark reports: which allocator behaviour this process runs with."""
    if _state["tuned"]:
        return "glibc malloc keeping freed memory (rtsal.keep_freed_memory)"
    preload = os.environ.get("LD_PRELOAD", "")
    if "tcmalloc" in preload or "jemalloc" in preload:
        return f"preloaded {os.path.basename(preload.split(':')[0])}"
    return "the C library's default malloc"


__all__ = ["keep_freed_memory", "allocator_description"]
