"""HandlerThreads: the pool sync handlers run on, bounded except for threads blocked in a sync SDK call."""

from __future__ import annotations

import threading
import time

import pytest

from iii.handler_threads import HandlerThreads, blocked


def test_at_most_limit_handlers_run_at_once() -> None:
    pool = HandlerThreads(limit=2)
    release = threading.Event()
    lock = threading.Lock()
    running, peak = 0, 0

    def work() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(5)
        with lock:
            running -= 1

    futures = [pool.submit(work) for _ in range(5)]
    time.sleep(0.05)  # (giving a third thread the chance to start, which is the fault looked for)
    assert pool.threads == 2
    release.set()
    for future in futures:
        future.result(5)
    assert peak == 2
    pool.shutdown()


def test_a_thread_blocked_in_an_sdk_wait_frees_its_slot() -> None:
    # The inner handler is what the outer one waits for: with one slot and no compensation, it never ran.
    pool = HandlerThreads(limit=1)
    answered = threading.Event()

    def outer() -> str:
        pool.submit(answered.set)
        with blocked():
            assert answered.wait(5), "the handler this one waits for never got a thread"
        return "done"

    assert pool.submit(outer).result(10) == "done"
    pool.shutdown()


def test_blocked_outside_a_handler_thread_changes_nothing() -> None:
    with blocked():
        pass


def test_errors_reach_the_future_and_keyword_arguments_pass() -> None:
    pool = HandlerThreads(limit=1)
    with pytest.raises(ZeroDivisionError):
        pool.submit(lambda: 1 / 0).result(5)
    assert pool.submit(sorted, [3, 1], reverse=True).result(5) == [3, 1]
    pool.shutdown()


def test_shutdown_cancels_queued_work_and_refuses_more() -> None:
    pool = HandlerThreads(limit=1)
    started, release = threading.Event(), threading.Event()

    def hold() -> bool:
        started.set()
        return release.wait(5)

    running = pool.submit(hold)
    assert started.wait(5)
    queued = pool.submit(lambda: "never")
    pool.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    release.set()
    assert running.result(5) is True
    with pytest.raises(RuntimeError, match="shutdown"):
        pool.submit(lambda: None)


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limit"):
        HandlerThreads(limit=0)
