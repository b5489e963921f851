"""HandlerThreads (5c972e5): a thread blocked in a sync SDK call frees its slot, but only up to a ceiling.

Without one, a sync handler that triggers itself (directly or around a cycle) started a thread per level: about
4,500 threads in 4 s through the engine, ~30,000 before the default 30 s timeout, each staying idle afterwards. The old
default executor held 6 and timed out. Past the ceiling a blocked thread keeps its slot (the old behaviour: the
caller's timeout breaks the cycle).
"""

from __future__ import annotations

import threading

import pytest

from iii import handler_threads
from iii.handler_threads import HandlerThreads, blocked
from tests.handler_chains import nested_chain

# (read this way so that the test runs, and fails on the thread count, against the code before the ceiling)
DEFAULT_MAX_THREADS: int = getattr(handler_threads, "DEFAULT_MAX_THREADS", 256)


def test_a_self_triggering_chain_stops_growing_at_the_ceiling() -> None:
    pool = HandlerThreads(limit=2, max_threads=16)
    try:
        with pytest.raises(TimeoutError):  # the chain is deeper than the ceiling: it times out, as it did before
            nested_chain(pool, 200, 0.5, 7.0)
        assert pool.threads <= 16
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def test_a_chain_within_the_ceiling_still_answers() -> None:
    pool = HandlerThreads(limit=1, max_threads=32)
    try:
        assert nested_chain(pool, 20, 5, 25) == 20
        assert pool.threads <= 32
    finally:
        pool.shutdown()


def test_the_default_ceiling_bounds_the_threads() -> None:
    pool = HandlerThreads(limit=2)
    try:
        with pytest.raises(TimeoutError):
            nested_chain(pool, DEFAULT_MAX_THREADS + 50, 1.0, 9.0)
        assert pool.threads <= DEFAULT_MAX_THREADS
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def test_blocked_after_shutdown_starts_no_thread() -> None:
    pool = HandlerThreads(limit=1)
    inside = threading.Event()
    go = threading.Event()
    started: list[int] = []

    def handler() -> None:
        inside.set()
        assert go.wait(5)
        with blocked():  # the pool was shut down meanwhile: no thread is started for the queue's end marker
            started.append(pool.threads)

    future = pool.submit(handler)
    assert inside.wait(5)
    pool.shutdown(wait=False, cancel_futures=True)
    go.set()
    future.result(5)
    assert started == [1]
    pool.shutdown(wait=True)


def test_the_ceiling_is_checked() -> None:
    with pytest.raises(ValueError):
        HandlerThreads(limit=4, max_threads=3)
