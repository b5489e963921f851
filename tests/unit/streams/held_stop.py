"""aiosqlite's stop of a failed open's thread, held so that a race lost now and then is lost every time.

aiosqlite (0.22) stops the thread of a connection that failed to open by a message the thread answers on the caller's
loop; a program that closes its loop first gets "RuntimeError: Event loop is closed" from that thread. Holding the
thread :data:`STOP_HELD_S` before it takes that message makes it answer after any loop that did not wait for it.

In-process, :func:`hold_stops` (from a fixture); in a child process, :data:`CHILD_PRELUDE` (run first in ``-c``), which
prints ``stop held`` on stdout at each hold so a test can check the hold was reached.

Example::

    @pytest.fixture
    def held_stops(monkeypatch: pytest.MonkeyPatch) -> type[HeldStop]:
        return hold_stops(monkeypatch)
"""

from __future__ import annotations

import queue
import time
from typing import Any

import aiosqlite.core
import pytest

from iii_streams import sqlite_threads

# far longer than a program takes from a failed open to its loop's close
STOP_HELD_S = 0.3


def is_stop(item: Any) -> bool:
    """Whether ``item``, taken by aiosqlite's thread, stops it: since 0.22 a call of ``close_and_stop`` the thread
    answers on the caller's loop; before, a bare sentinel (the thread just ends: holding it still tests the wait)."""
    return not isinstance(item, tuple) or getattr(item[1], "__name__", "") == "close_and_stop"


class HeldStop(queue.SimpleQueue[Any]):
    """aiosqlite's queue to its thread, holding that thread ``STOP_HELD_S`` before the stop message."""

    held = 0

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        item = super().get(block, timeout)
        if is_stop(item):
            type(self).held += 1
            time.sleep(STOP_HELD_S)  # widens the race in the driver's thread; the test itself waits on no timer
        return item


def hold_stops(monkeypatch: pytest.MonkeyPatch) -> type[HeldStop]:
    """Hold every aiosqlite stop from now until ``monkeypatch`` undoes it; ``HeldStop.held`` counts them."""
    monkeypatch.setattr(HeldStop, "held", 0)
    monkeypatch.setattr(aiosqlite.core, "SimpleQueue", HeldStop)
    monkeypatch.setattr(sqlite_threads, "DRIVER_THREAD_S", 20.0)  # the hold, not a loaded machine, is what is tested
    return HeldStop


# The same hold in a child process. There the thread must also outlive the program's main code: SQLAlchemy makes it a
# daemon, which the interpreter's exit would freeze, held, before it answers; made an ordinary thread, the exit joins
# it and it answers, as an unheld one that lost the race did.
CHILD_PRELUDE = f"""
import queue, sys, threading, time
import aiosqlite.core
from iii_streams import sqlite_threads
class Joined(threading.Thread):
    daemon = property(lambda self: False, lambda self, value: None)
aiosqlite.core.Thread = Joined
class HeldStop(queue.SimpleQueue):
    def get(self, *args, **kwargs):
        item = super().get(*args, **kwargs)
        if not isinstance(item, tuple) or getattr(item[1], "__name__", "") == "close_and_stop":
            print("stop held", flush=True)
            time.sleep({STOP_HELD_S})
        return item
aiosqlite.core.SimpleQueue = HeldStop
sqlite_threads.DRIVER_THREAD_S = 20.0  # the hold, not a loaded machine, is what this run tests
"""
