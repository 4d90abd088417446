"""Process-level CPU performance settings used by the commands.

The training step allocates a few tensors of several MB per encoder pass. glibc's malloc
serves allocations that large with fresh ``mmap`` pages and returns them on ``free``, so
every step pays page faults (and zeroing by the kernel) for the same memory again; in a
small VM that costs more than a third of a step. :func:`tune_allocator` keeps such memory
in the process for reuse. It changes no numbers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

_log = logging.getLogger(__name__)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def tune_allocator(
    mmap_threshold: int = 32 * 1024 * 1024, trim_threshold: int = 512 * 1024 * 1024
) -> bool:
    """Keep freed memory in the process for reuse (Linux/glibc only; idempotent).

    glibc's malloc then serves allocations below ``mmap_threshold`` bytes from its heap and
    keeps up to ``trim_threshold`` bytes of freed memory instead of returning it.

    Returns:
        Whether the settings were applied (False on other platforms or C libraries).
    """
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )
    _log.debug("malloc tuning %s", "applied" if ok else "refused")
    _done = ok
    return ok
