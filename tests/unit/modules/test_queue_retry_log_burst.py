"""Failed attempts are logged one line each while they are few, and counted past
``RETRY_LOG_BURST`` lines per ``RETRY_LOG_INTERVAL_S``: every failure is in the log, in its own line or a count.

Before: one INFO line per job per failed attempt, with no bound: 400-460 lines a second while a condition worker
crash-looped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re

import pytest

from iii_engine.modules.queue import consumer as consumer_module
from iii_engine.modules.queue.consumer import DLQ_ERROR_BYTES, RETRY_LOG_BURST, QueueConsumer
from iii_engine.modules.queue.settings import QueueSettings
from iii_engine.modules.queue.store import Job, MemoryQueueStore
from tests.polling import until

pytestmark = pytest.mark.timeout(30)

JOBS = 20
FAILURES = 200


async def _run_until(consumer: QueueConsumer, event: asyncio.Event, caplog: pytest.LogCaptureFixture, level: int,
                     within: float = 10) -> None:
    """Run ``consumer``, its log captured from ``level``, until ``event``; then stop it."""
    caplog.set_level(level, logger="iii_engine.modules.queue.consumer")
    consumer.start()
    try:
        await asyncio.wait_for(event.wait(), within)
    finally:
        await consumer.stop()


async def test_a_crash_loop_logs_a_burst_of_lines_then_counts(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryQueueStore()
    for n in range(JOBS):
        await store.push("q", Job.new("q", "f", {"n": n}))
    failed = 0
    enough = asyncio.Event()

    async def crashes(job: Job) -> None:
        nonlocal failed
        failed += 1
        if failed >= FAILURES:
            enough.set()
        raise RuntimeError(f"handler crashed on {job.id}")

    consumer = QueueConsumer(store, "q", QueueSettings(concurrency=4, poll_interval_ms=10, max_retries=1_000_000,
                                                       backoff_ms=0), crashes)
    await _run_until(consumer, enough, caplog, logging.INFO, 20)
    messages = [r.getMessage() for r in caplog.records]
    one_by_one = [m for m in messages
                  if re.match(r"queue q: job \S+ attempt \d+ failed, retry in 0 ms: handler crashed", m)]
    counted = [int(m.group(1)) for line in messages
               if (m := re.search(r"queue q: (\d+) failed attempt\(s\) not logged one by one", line))]
    assert RETRY_LOG_BURST <= len(one_by_one) < 3 * RETRY_LOG_BURST, len(one_by_one)  # (a slow run spans intervals)
    assert counted, messages[-3:]
    assert len(one_by_one) + sum(counted) == failed  # none lost from the log, none twice
    assert len(messages) < 2 * RETRY_LOG_BURST + 10


async def test_a_failure_after_the_stop_gets_its_own_line(caplog: pytest.LogCaptureFixture) -> None:
    """A handler that outlives the stop's cancel and then fails: its attempt is logged as it fails. Before, it went
    into a count whose timer the stop had already flushed, and was never written."""
    store = MemoryQueueStore()
    await store.push("q", Job.new("q", "f", {}))
    running, release = asyncio.Event(), asyncio.Event()
    failed = asyncio.Event()

    async def outlives_its_cancel(job: Job) -> None:
        running.set()
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):  # (swallows the stop's cancels, as a careless one may)
                await release.wait()
        failed.set()
        raise RuntimeError("failed after the stop")

    consumer = QueueConsumer(store, "q", QueueSettings(poll_interval_ms=10, max_retries=5), outlives_its_cancel,
                             stop_timeout_ms=50)
    caplog.set_level(logging.INFO, logger="iii_engine.modules.queue.consumer")
    for _ in range(RETRY_LOG_BURST + 1):  # the burst spent and a count just written: the next count waits 10 s
        consumer._retry_log.note("failed attempt(s)", "earlier")
    consumer.start()
    await asyncio.wait_for(running.wait(), 10)
    await consumer.stop()
    release.set()
    await asyncio.wait_for(failed.wait(), 10)
    # (its count's timer, 10 s away, would outlive the loop: the line must come as it fails)
    await until(lambda: any("failed after the stop" in r.getMessage() for r in caplog.records), 2)


async def test_dead_letters_are_a_burst_of_clipped_lines_then_counted(caplog: pytest.LogCaptureFixture) -> None:
    """Jobs failing their last attempt: before, a WARNING each with the handler's whole error (5,000 jobs with
    errors of 100,000 characters wrote 500 MB of log)."""
    store = MemoryQueueStore()
    for n in range(JOBS):
        await store.push("q", Job.new("q", "f", {"n": n}))
    failed = 0

    async def fails(job: Job) -> None:
        nonlocal failed
        failed += 1
        raise RuntimeError("x" * 100_000)

    consumer = QueueConsumer(store, "q", QueueSettings(concurrency=4, poll_interval_ms=10, max_retries=1), fails)
    caplog.set_level(logging.INFO, logger="iii_engine.modules.queue.consumer")
    consumer.start()
    try:
        await until(lambda: failed == JOBS)
        await until(lambda: consumer.running == 0)
    finally:
        await consumer.stop()  # (writes the count of those past the burst)
    assert (await store.counts("q")).dlq == JOBS
    messages = [r.getMessage() for r in caplog.records]
    one_by_one = [m for m in messages if re.match(r"queue q: job \S+ failed 1 time\(s\), moved to the DLQ: x", m)]
    counted = [int(m.group(1)) for line in messages
               if (m := re.search(r"queue q: (\d+) dead letter\(s\) after their last attempt", line))]
    assert RETRY_LOG_BURST <= len(one_by_one) < JOBS, len(one_by_one)
    assert len(one_by_one) + sum(counted) == JOBS
    assert all(len(m) < DLQ_ERROR_BYTES + 400 for m in messages), max(map(len, messages))  # (a count names the latest)


async def test_every_slot_held_by_a_handler_that_does_not_answer_is_said(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: two hung handlers at concurrency 2 held the queue for good, their leases renewed, the log silent."""
    monkeypatch.setattr(consumer_module, "STALL_WARN_S", 0.2)
    store = MemoryQueueStore()
    for n in range(3):
        await store.push("q", Job.new("q", "slow::f", {"n": n}))
    hang = asyncio.Event()

    async def hangs(job: Job) -> None:
        await hang.wait()

    consumer = QueueConsumer(store, "q", QueueSettings(concurrency=2, poll_interval_ms=10, lease_ms=60), hangs)
    caplog.set_level(logging.WARNING, logger="iii_engine.modules.queue.consumer")
    consumer.start()
    try:
        await until(lambda: any("concurrency slots have been held" in r.getMessage() for r in caplog.records))
    finally:
        hang.set()
        await consumer.stop()
    (line,) = {r.getMessage() for r in caplog.records if "concurrency slots" in r.getMessage()}
    assert "queue q: all 2 of its concurrency slots" in line and "of slow::f" in line
    assert "invocation_timeout_ms" in line


async def test_a_long_job_with_none_waiting_behind_it_is_not_said_stalled(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A queue whose jobs are long by nature: a warning every minute while one ran was noise (re-attack)."""
    monkeypatch.setattr(consumer_module, "STALL_WARN_S", 0.1)
    store = MemoryQueueStore()
    await store.push("q", Job.new("q", "slow::f", {}))
    done = asyncio.Event()

    async def long(job: Job) -> None:
        await asyncio.sleep(0.6)  # (the job's own work: several maintenance rounds of lease_ms 60)
        done.set()

    consumer = QueueConsumer(store, "q", QueueSettings(concurrency=1, poll_interval_ms=10, lease_ms=60), long)
    await _run_until(consumer, done, caplog, logging.WARNING)
    assert not [r for r in caplog.records if "concurrency slots" in r.getMessage()]
