"""Keep the C allocator from holding on to the memory of large, short-lived buffers.

glibc serves blocks above its mmap threshold straight from the operating system and returns them on free, but it
raises that threshold each time such a block is freed, so after a few multi-MiB frames later buffers of that size
stay in the heap once released: a peer that sends frames near the size limit leaves the engine tens of MiB larger
for good. Pinning the threshold at 1 MiB keeps large buffers returnable; other C libraries are left alone.

Example:
    >>> tune_allocator() in (True, False)
    True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

__all__ = ["MMAP_THRESHOLD_BYTES", "tune_allocator"]

log = logging.getLogger(__name__)

MMAP_THRESHOLD_BYTES = 1024 * 1024
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
_tuned = False


def tune_allocator(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Pin glibc's mmap threshold at ``threshold`` bytes; ``False`` (and no change) on any other C library.

    Idempotent and process-wide; the engine calls it once at start.
    """
    global _tuned
    if _tuned:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, threshold) != 1:
        log.debug("mallopt(M_MMAP_THRESHOLD) refused; allocator left as it is")
        return False
    _tuned = True
    return True
