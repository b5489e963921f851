"""aiosqlite's connection threads, found and waited for: the one module that relies on how aiosqlite names them.

aiosqlite (0.22) stops the thread of a connection that failed to open by a message that thread answers on the
caller's event loop later. A process that closed its loop first (``iii-engine`` exiting on that very failure,
``iii-streams migrate`` on a file it cannot open) printed the thread's "RuntimeError: Event loop is closed" traceback
after its one-line error. So a failed open notes the threads running before it (:func:`sqlite_threads`) and waits, at
most :data:`DRIVER_THREAD_S`, for the ones started since to end (:func:`driver_threads_ended`).

The thread is found one of two ways, checked here (a test fails when an upgrade changes both): before 0.22 the public
``Connection`` is the thread; since 0.22 it starts a plain ``Thread``, known only by its name, which ``Thread`` takes
from its target, a private function. Without either, :data:`SQLITE_THREAD_MISSING` names what is missing, no thread
is found and a failed open does not wait (the traceback at exit may come back; nothing else changes).

Example:
    >>> sqlite_threads() == set()
    True
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import threading
from typing import Any, Final

__all__ = ["DRIVER_THREAD_S", "SQLITE_THREAD_MISSING", "driver_threads_ended", "sqlite_threads"]

DRIVER_THREAD_S = 1.0
"""How long a failed open waits at most for aiosqlite's threads started since it began."""
_DRIVER_THREAD_POLL_S: Final = 0.005


def _import_or_none(name: str) -> Any:
    """Module ``name``, or ``None`` when it is not installed (a PostgreSQL-only install has no aiosqlite)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


_SQLITE_THREAD_TARGET: Final = "_connection_worker_thread"
_sqlite_core = sys.modules.get("aiosqlite.core") or _import_or_none("aiosqlite.core")
_SQLITE_CONNECTION_THREAD: Final[type[threading.Thread] | None] = (
    _sqlite_core.Connection if isinstance(getattr(_sqlite_core, "Connection", None), type)
    and issubclass(_sqlite_core.Connection, threading.Thread) else None)
SQLITE_THREAD_MISSING: tuple[str, ...] = () if _SQLITE_CONNECTION_THREAD is not None or callable(
    getattr(_sqlite_core, _SQLITE_THREAD_TARGET, None)) else (f"aiosqlite.core.{_SQLITE_THREAD_TARGET}",)
"""What this module could not find in aiosqlite (empty when it finds its threads)."""
del _sqlite_core


def sqlite_threads() -> set[threading.Thread]:
    """aiosqlite's connection threads running now (none when :data:`SQLITE_THREAD_MISSING` names what is missing).

    Example:
        >>> sqlite_threads() == set()
        True
    """
    if SQLITE_THREAD_MISSING:
        return set()
    if _SQLITE_CONNECTION_THREAD is not None:
        return {thread for thread in threading.enumerate() if isinstance(thread, _SQLITE_CONNECTION_THREAD)}
    return {thread for thread in threading.enumerate() if f"({_SQLITE_THREAD_TARGET})" in thread.name}


async def driver_threads_ended(before: set[threading.Thread]) -> None:
    """Wait (at most :data:`DRIVER_THREAD_S`) until the aiosqlite threads started since ``before`` have ended.
    Polled: the thread signals nothing we can await, and this runs only when a store failed to open.

    Example:
        >>> asyncio.run(driver_threads_ended(sqlite_threads()))  # none started since: returns at once
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DRIVER_THREAD_S
    for thread in sqlite_threads() - before:
        # a join in an executor thread would outlive a cancelled caller; short sleeps do not
        while thread.is_alive() and loop.time() < deadline:  # noqa: ASYNC110 - a thread signals nothing awaitable
            await asyncio.sleep(_DRIVER_THREAD_POLL_S)
