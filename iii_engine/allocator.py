"""Keep the C allocator from holding on to the memory of large, short-lived buffers.

glibc serves blocks above its mmap threshold straight from the operating system and returns them on free, but it
raises that threshold each time such a block is freed, so after a few multi-MiB frames later buffers of that size
stay in the heap once released: a peer that sends frames near the size limit leaves the engine tens of MiB larger
for good. Pinning the threshold just above 1 MiB keeps larger buffers returnable; other C libraries are left alone.

Smaller blocks freed in the middle of glibc's heaps stay resident too (only the top of a heap shrinks on free):
after a burst of garbage frames and dropped connections, :class:`MemoryReleaser` asks glibc (``malloc_trim``) to
give every free page back, once things have been quiet for a moment and never more often than a set interval.

Example:
    >>> tune_allocator() in (True, False)
    True
    >>> trim_memory() in (True, False)
    True
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import logging
import platform
from typing import Any

__all__ = ["MMAP_THRESHOLD_BYTES", "MemoryReleaser", "trim_memory", "tune_allocator"]

log = logging.getLogger(__name__)

MMAP_THRESHOLD_BYTES = 1024 * 1024 + 64 * 1024
"""glibc's mmap threshold in the engine: 1 MiB and 64 KiB, so that the buffers of the largest channel frame the
engine invites (1 MiB of payload, :data:`iii_engine.server.FRAME_INVITATION`: its frame buffer and its payload,
each a few bytes over 1 MiB) stay on the heap; anything larger goes back to the system once freed. Why not 1 MiB:
the invitation had to stay under it (960 KiB), and each 1 MiB write of a writer then crossed the relay as two frames
(960 KiB and 64 KiB), twice the relay's work per frame (issue 10)."""
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
_tuned = False


@functools.cache
def _glibc() -> Any:
    """glibc, or ``None`` on any other C library (or when it cannot be loaded)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def tune_allocator(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Pin glibc's mmap threshold at ``threshold`` bytes; ``False`` (and no change) on any other C library.

    Idempotent and process-wide; the engine calls it once at start.
    """
    global _tuned
    if _tuned:
        return True
    mallopt = getattr(_glibc(), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, threshold) != 1:
        log.debug("mallopt(M_MMAP_THRESHOLD) refused; allocator left as it is")
        return False
    _tuned = True
    _tune_channel_sockets(threshold)
    return True


def _tune_channel_sockets(threshold: int) -> None:
    """Do now, keeping the pin, the allocator tuning the engine's first fast channel socket would do.

    Why: that tuning (iii.ws_fastpath.ALLOCATOR_TUNING) raises the mmap threshold to 4 MiB, which in the engine
    undid the pin: after a burst of large garbage frames the engine kept 10-19 MiB (bench.chaos fuzz, target
    16 MiB; 2-3 MiB without it). Its other half, the trim threshold that keeps the freed top of the heap for the
    next payloads (the relay's page faults per frame), is kept. A tuning already done is left as it is: the pin
    set just before overrides its mmap threshold.
    """
    from iii import ws_fastpath  # the SDK's channel code; imported only here, at the engine's start

    if ws_fastpath.ALLOCATOR_STATE is None:
        ws_fastpath.ALLOCATOR_STATE = ws_fastpath.tune_allocator(mmap_threshold=threshold)


def trim_memory() -> bool:
    """Give glibc's free pages back to the operating system (``malloc_trim(0)``, every arena); ``False`` when there
    is no glibc. ctypes releases the GIL for the call, so it may run in a worker thread."""
    malloc_trim = getattr(_glibc(), "malloc_trim", None)
    if malloc_trim is None:
        return False
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc_trim.restype = ctypes.c_int
    malloc_trim(0)
    return True


class MemoryReleaser:
    """Runs :func:`trim_memory` in a worker thread ``quiet_s`` after the last :meth:`note` (but no later than
    ``max_wait_s`` after the first one), at most once every ``min_interval_s``: callers note what leaves freed
    memory behind (garbage frames, big frames, dropped connections), which is never the call path, and the trim
    happens once the burst is over, or during a burst that does not end.

    Example:
        >>> async def demo() -> int:
        ...     releaser = MemoryReleaser(quiet_s=0.0, min_interval_s=0.0)
        ...     releaser.note()
        ...     await releaser.wait_idle()
        ...     return releaser.trims
        >>> asyncio.run(demo()) in (0, 1)
        True
    """

    def __init__(self, *, quiet_s: float = 1.0, max_wait_s: float = 5.0, min_interval_s: float = 5.0) -> None:
        self.quiet_s = quiet_s
        self.max_wait_s = max_wait_s
        self.min_interval_s = min_interval_s
        self.trims = 0  # trims run (0 forever without glibc)
        self._enabled = _glibc() is not None
        self._first_note = self._last_note = 0.0
        self._last_trim = float("-inf")
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()  # no trim waiting or running
        self._idle.set()

    def note(self) -> None:
        """Something just freed (or is about to free) memory: trim once things are quiet."""
        if not self._enabled:
            return
        loop = asyncio.get_running_loop()
        self._last_note = loop.time()
        if self._idle.is_set():
            self._idle.clear()
            self._first_note = self._last_note
            self._timer = loop.call_at(self._due(), self._check)

    def _due(self) -> float:
        settled = min(self._last_note + self.quiet_s, self._first_note + self.max_wait_s)
        return max(settled, self._last_trim + self.min_interval_s)

    def _check(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        due = self._due()
        if loop.time() < due:  # noted again since the timer was set: wait for quiet
            self._timer = loop.call_at(due, self._check)
            return
        self._task = loop.create_task(self._trim())

    async def _trim(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            if await asyncio.to_thread(trim_memory):
                self.trims += 1
        except Exception:  # a failed trim only leaves memory where it was
            log.debug("malloc_trim failed", exc_info=True)
        finally:
            self._last_trim = loop.time()
            self._task = None
            if self._last_note >= started:  # noted during the trim: that memory gets its own
                self._first_note = self._last_note
                self._timer = loop.call_at(self._due(), self._check)
            else:
                self._idle.set()

    async def wait_idle(self) -> None:
        """Wait until a noted trim has run (or was cancelled)."""
        await self._idle.wait()

    def close(self) -> None:
        """Cancel a pending trim (the engine stops)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._idle.set()
