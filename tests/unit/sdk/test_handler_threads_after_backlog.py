"""HandlerThreads after a backlog: a blocked thread still gets its queued inner run a thread.

The executor counts idle threads with a semaphore released once per finished run: after 200 quick runs queued on 4
threads it said ~190 threads were idle while all 4 were busy, so a thread in :func:`blocked` started none and a
chain of nested sync calls waited for its timeout (what the README says cannot happen).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

from iii.handler_threads import HandlerThreads, blocked
from tests.handler_chains import nested_chain


def test_a_nested_chain_answers_after_a_backlog() -> None:
    pool = HandlerThreads(limit=4, max_threads=64)
    try:
        backlog = [pool.submit(sum, [i, 1]) for i in range(200)]  # queued faster than 4 threads run them
        assert [f.result(5) for f in backlog] == [i + 1 for i in range(200)]
        assert nested_chain(pool, 20, 3, 5) == 20
        assert pool.threads <= 64
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def test_after_the_chain_a_second_backlog_and_chain_still_answer() -> None:
    pool = HandlerThreads(limit=2, max_threads=64)
    try:
        for _ in range(2):
            assert all(f.result(5) == 3 for f in [pool.submit(sum, [1, 2]) for _ in range(500)])
            assert nested_chain(pool, 30, 3, 5) == 30
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def test_an_inner_run_submitted_after_its_caller_blocked_gets_a_thread() -> None:
    """Through the engine the inner run comes back (and is submitted) after its caller blocked: no queue to see then,
    and at its submit the executor's idle count, inflated by the backlog, started no thread."""
    pool = HandlerThreads(limit=4, max_threads=64)

    def level(n: int) -> int:
        if n == 0:
            return 0
        inner: list[Future[int]] = []
        with blocked():
            arrives = threading.Thread(target=lambda: inner.append(pool.submit(level, n - 1)))
            arrives.start()
            arrives.join(5)
            return inner[0].result(3) + 1

    try:
        assert all(f.result(5) == 3 for f in [pool.submit(sum, [1, 2]) for _ in range(200)])
        assert pool.submit(level, 20).result(5) == 20
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
