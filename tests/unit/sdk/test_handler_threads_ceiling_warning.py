"""When every handler thread up to the ceiling is busy and runs wait in the queue, one warning says so, naming the
ceiling, the runs waiting and the cause (sync handlers blocked in a sync ``trigger``); at most every 30 s.

Before: nothing was logged; a nested sync chain deeper than the ceiling only timed out, with an error that did not
name the ceiling.
"""

from __future__ import annotations

import logging
import threading

import pytest

from iii.handler_threads import HandlerThreads
from tests.handler_chains import nested_chain

pytestmark = pytest.mark.timeout(30)

LOGGER = "iii.handler_threads"


def _told(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and "max_threads" in r.getMessage()]


def test_a_chain_past_the_ceiling_is_told_once_naming_the_ceiling_and_the_cause(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    pool = HandlerThreads(limit=1, max_threads=3, name="ceiling-test")
    try:
        for _ in range(2):  # twice past the ceiling within 30 s: one warning
            with pytest.raises(TimeoutError):
                nested_chain(pool, 6, 0.3, 6.2)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    told = _told(caplog)
    assert len(told) == 1, [r.getMessage() for r in told]
    line = told[0].getMessage()
    assert told[0].levelno == logging.WARNING
    assert "all 3 sync handler threads (the ceiling, max_threads=3) are busy and 1 run(s) wait in the queue" in line
    assert "'ceiling-test'" in line
    assert "nested chains deeper than the ceiling cannot finish: use async handlers or trigger_async" in line


def test_a_chain_within_the_ceiling_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    pool = HandlerThreads(limit=1, max_threads=8)
    try:
        assert nested_chain(pool, 7, 5, 25) == 7
    finally:
        pool.shutdown()
    assert not _told(caplog)


def test_plain_load_at_a_ceiling_equal_to_the_limit_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """Busy threads with runs queued and none waiting in a sync SDK call: the queue drains, nothing is stuck (the
    warning fired here when ``limit == max_threads``)."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    pool = HandlerThreads(limit=2, max_threads=2)
    gate = threading.Event()
    both = threading.Barrier(3)

    def hold() -> bool:
        both.wait(10)
        return gate.wait(10)

    try:
        first = [pool.submit(hold) for _ in range(2)]
        both.wait(10)  # both threads are running: the next submits queue
        queued = [pool.submit(int, 1) for _ in range(3)]
        gate.set()
        assert all(f.result(timeout=10) for f in first) and [f.result(timeout=10) for f in queued] == [1, 1, 1]
    finally:
        pool.shutdown()
    assert not _told(caplog)
