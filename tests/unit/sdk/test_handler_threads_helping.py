"""A handler thread blocked in a sync call at the threads' ceiling runs queued runs itself while it waits
(``HandlerThreads.wait_helping``): the edges of that help, on a pool of one thread (its ceiling) and no engine.

Each test's first run stands for a sync handler in ``iii.trigger``: inside :func:`blocked` it waits on a
:class:`ThreadWaiter` the test settles. Before the help, the run queued behind it waited until that waiter was
settled from outside (a chain's next level: never), and these tests timed out on their first ``result``.
"""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import Future
from typing import Any

import pytest

from iii import handler_threads
from iii.handler_runner import _Running
from iii.handler_threads import HandlerThreads, blocked
from iii.pending_calls import ThreadWaiter

WAIT_S = 5.0


def _blocked_call(waiter: ThreadWaiter) -> Any:
    """What a sync ``trigger`` on a handler thread does once its call is sent."""
    with blocked() as pool:
        if pool is None:
            return waiter.wait(1.0, lambda: True)
        return pool.wait_helping(waiter, 1.0, lambda: True)


@pytest.fixture
def pool() -> Any:
    threads = HandlerThreads(limit=1, max_threads=1)
    yield threads
    threads.shutdown(wait=False, cancel_futures=True)


def test_a_helped_run_that_raises_fails_its_own_future_and_the_waiter_goes_on(pool: HandlerThreads) -> None:
    waiter, waiting_thread = ThreadWaiter(), []

    def waiting() -> Any:
        waiting_thread.append(threading.get_ident())
        return _blocked_call(waiter)

    outer = pool.submit(waiting)
    ran_on: list[int] = []

    def raising() -> None:
        ran_on.append(threading.get_ident())
        raise ValueError("the helped run failed")

    helped = pool.submit(raising)
    with pytest.raises(ValueError, match="the helped run failed"):
        helped.result(WAIT_S)
    assert ran_on == waiting_thread  # run by the blocked thread: the pool's only one
    assert not outer.done()  # still waiting for its own answer
    waiter.set_result(42)
    assert outer.result(WAIT_S) == 42


def test_the_waiters_own_answer_come_while_it_helps_is_seen_after(pool: HandlerThreads) -> None:
    waiter, helping, release = ThreadWaiter(), threading.Event(), threading.Event()
    outer = pool.submit(_blocked_call, waiter)

    def slow() -> str:
        helping.set()
        assert release.wait(WAIT_S)
        return "helped"

    helped = pool.submit(slow)
    assert helping.wait(WAIT_S)
    waiter.set_result("own")  # while the blocked thread runs the helped run
    assert not outer.done()
    release.set()
    assert helped.result(WAIT_S) == "helped"
    assert outer.result(WAIT_S) == "own"


def test_the_waiters_own_error_come_while_it_helps_is_raised_after(pool: HandlerThreads) -> None:
    waiter, helping, release = ThreadWaiter(), threading.Event(), threading.Event()
    outer = pool.submit(_blocked_call, waiter)

    def slow() -> bool:
        helping.set()
        return release.wait(WAIT_S)

    helped = pool.submit(slow)
    assert helping.wait(WAIT_S)
    waiter.set_exception(TimeoutError("Invocation of 'x' timed out after 10ms"))
    release.set()
    assert helped.result(WAIT_S) is True
    with pytest.raises(TimeoutError, match="timed out"):
        outer.result(WAIT_S)


def test_help_nests_up_to_the_depth_bound_then_only_waits(pool: HandlerThreads,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handler_threads, "MAX_HELP_DEPTH", 3)
    waiters = [ThreadWaiter() for _ in range(5)]
    seen: list[tuple[int, int]] = []  # (level, helped runs nested on the thread as it ran)
    futures: list[Future[Any]] = []
    bottom = threading.Event()

    def level(i: int) -> Any:
        seen.append((i, getattr(handler_threads._local, "depth", 0)))
        if i < 4:  # the next level, queued: the pool's only thread is this one
            futures.append(pool.submit(level, i + 1))
        if i == 3:
            bottom.set()
        return _blocked_call(waiters[i])

    futures.append(pool.submit(level, 0))
    assert bottom.wait(WAIT_S)
    # Level 3 runs 3 deep: it waits without helping, so level 4 stays queued
    assert seen == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert not futures[4].running() and not futures[4].done()
    for i in (3, 2, 1, 0):
        waiters[i].set_result(i)
    assert [futures[i].result(WAIT_S) for i in range(4)] == [0, 1, 2, 3]
    waiters[4].set_result(4)  # level 4 got the thread once the others returned, at depth 0
    assert futures[4].result(WAIT_S) == 4
    assert seen[4] == (4, 0)


def test_a_helped_runs_context_and_the_waiters_stay_apart(pool: HandlerThreads) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="none")
    waiter, seen = ThreadWaiter(), dict[str, Any]()

    def outer() -> Any:
        var.set("waiter's")
        result = _blocked_call(waiter)
        seen["waiter after"] = var.get()
        seen["depth after"] = getattr(handler_threads._local, "depth", 0)
        return result

    def inner() -> None:
        seen["helped"] = var.get()
        seen["depth in"] = getattr(handler_threads._local, "depth", 0)
        var.set("helped's own")

    ctx = contextvars.copy_context()
    ctx.run(var.set, "helped's")
    out = pool.submit(contextvars.copy_context().run, outer)
    pool.submit(ctx.run, inner).result(WAIT_S)  # (the handler runner runs each handler so, in its own copy)
    waiter.set_result("done")
    assert out.result(WAIT_S) == "done"
    assert seen == {"helped": "helped's", "depth in": 1, "waiter after": "waiter's", "depth after": 0}


def test_a_nested_run_leaves_the_run_it_helped_counted() -> None:
    running = _Running()
    running.enter("outer")
    running.enter("helped")
    assert running.now() == {"outer": 1, "helped": 1}
    running.leave()
    assert running.now() == {"outer": 1}
    assert running.now(spare_thread=threading.get_ident()) == {}
    running.leave()
    assert running.now() == {}


def test_a_timeout_at_the_ceiling_names_it(pool: HandlerThreads) -> None:
    waiter = ThreadWaiter()
    outer = pool.submit(_blocked_call, waiter)
    exc = TimeoutError("Invocation of 'c1' timed out after 3000ms")
    assert pool.submit(lambda: pool.name_ceiling(exc)).result(WAIT_S) is None  # (helped: the pool is at its ceiling)
    assert str(exc) == ("Invocation of 'c1' timed out after 3000ms while all 1 handler threads were busy (their "
                        "ceiling, max_threads; a blocked thread runs queued handlers 64 deep at most)")
    waiter.set_result(None)
    outer.result(WAIT_S)
