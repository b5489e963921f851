"""A store that fails while the consumer finishes jobs (Redis down, or its pool exhausted, as their handlers end):
the consumer tries the finish again, with the failed polls' backoff, for up to the job's lease; a finish that then
succeeds leaves nothing to run again, and one given up on gets one line per job, naming the job and the error, with
the traceback at debug level only.

Before: a finish that failed once was given up on at once, and its job ran a second time once its lease ran out
(19-20 of 400 jobs per burst of enqueues exhausting a healthy Redis's pool, logged as jobs "of a lost engine"); and
before that, ``log.exception`` per job: at concurrency 4, one outage logged 7 records carrying 18 chained tracebacks.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import pytest

from iii_engine.modules.queue.consumer import QueueConsumer
from iii_engine.modules.queue.settings import QueueSettings
from iii_engine.modules.queue.store import Job, MemoryQueueStore, QueueCounts
from iii_streams.errors import PoolExhaustedError
from tests.polling import until

pytestmark = pytest.mark.timeout(30)

JOBS = 4


class AckFails(MemoryQueueStore):
    """Acks fail with a chained error, as redis-py's do when the connection is lost, the first ``failing`` of each
    job (all of them: ``None``)."""

    def __init__(self, failing: int | None = None) -> None:
        super().__init__()
        self.failing = failing
        self.acks: Counter[str] = Counter()

    async def ack(self, queue: str, job: Job) -> None:
        self.acks[job.id] += 1
        if self.failing is not None and self.acks[job.id] > self.failing:
            await super().ack(queue, job)
            return
        try:
            raise OSError("Connection reset by peer")
        except OSError as cause:
            raise ConnectionError("Error while reading from 127.0.0.1:6379") from cause


async def _pushed(store: MemoryQueueStore) -> list[str]:
    ids = []
    for n in range(JOBS):
        job = Job.new("q", "f", {"n": n})
        ids.append(job.id)
        await store.push("q", job)
    return ids


async def test_a_finish_that_fails_is_tried_again_and_the_job_runs_once(caplog: pytest.LogCaptureFixture) -> None:
    store = AckFails(failing=3)
    ids = await _pushed(store)
    ran: Counter[str] = Counter()

    async def run(job: Job) -> None:
        ran[job.id] += 1

    consumer = QueueConsumer(store, "q", QueueSettings(concurrency=JOBS, poll_interval_ms=10), run)
    caplog.set_level(logging.INFO, logger="iii_engine.modules.queue.consumer")
    consumer.start()
    try:
        await until(lambda: all(store.acks[job_id] == 4 for job_id in ids), within=10)
        await until(lambda: store.held() == {}, within=10)
    finally:
        await consumer.stop()
    assert ran == dict.fromkeys(ids, 1)
    assert await store.counts("q") == QueueCounts(0, 0, 0, 0)  # done: nothing left to run again
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    told = [r.getMessage() for r in caplog.records if "once the store answered again" in r.getMessage()]
    assert len(told) == JOBS and all("(3 failed tries)" in line for line in told), told


async def test_a_finish_given_up_on_is_one_line_per_job_naming_it_and_the_error(
        caplog: pytest.LogCaptureFixture) -> None:
    store = AckFails()
    ids = await _pushed(store)
    # a short lease: the tries end within it
    consumer = QueueConsumer(store, "q", QueueSettings(concurrency=JOBS, poll_interval_ms=10, lease_ms=300),
                             lambda job: asyncio.sleep(0))
    caplog.set_level(logging.DEBUG, logger="iii_engine.modules.queue.consumer")

    def loud() -> list[logging.LogRecord]:
        return [r for r in caplog.records
                if "finishing or releasing" in r.getMessage() and r.levelno >= logging.WARNING]

    consumer.start()
    try:
        await until(lambda: all(any(job_id in r.getMessage() for r in loud()) for job_id in ids), within=10)
    finally:
        await consumer.stop()
    assert all(r.exc_info is None for r in loud()), "a traceback at error level"
    for job_id in ids:
        line = next(r.getMessage() for r in loud() if job_id in r.getMessage())
        assert "ConnectionError: Error while reading from 127.0.0.1:6379" in line, line
        assert "tries over its lease; it runs again once its lease expires" in line, line
        # tried again before giving up
        assert store.acks[job_id] > 1
    # the traceback is still there for whoever turns debug on, one per failed try
    told = [r for r in caplog.records if "finishing or releasing" in r.getMessage()]
    assert sum(1 for r in told if r.levelno == logging.DEBUG and r.exc_info) >= sum(store.acks.values()) - JOBS


class RetryFails(MemoryQueueStore):
    """The first ``retry`` of each job fails with ``error``."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error
        self.retries: Counter[str] = Counter()

    async def retry(self, queue: str, job: Job, *, due_ms: int) -> None:
        self.retries[job.id] += 1
        if self.retries[job.id] == 1:
            raise self.error
        await super().retry(queue, job, due_ms=due_ms)


@pytest.mark.parametrize(("error", "again"), [
    (PoolExhaustedError("Redis connection pool exhausted"), True),  # never sent: tried again
    (ConnectionError("Error while reading from 127.0.0.1:6379"), False),  # may have been applied: not again
])
async def test_a_failed_retry_step_is_tried_again_only_when_it_was_never_sent(
        caplog: pytest.LogCaptureFixture, error: Exception, again: bool) -> None:
    # A retry leaves the job heading its lane: applied with its answer lost, the job could be claimed again
    # meanwhile, and running the step again took that claim back (a third run, two at once: 6-18 of 200 jobs).
    store = RetryFails(error)
    job = Job.new("q", "f", 1)
    await store.push("q", job)

    async def fails(job: Job) -> None:
        raise RuntimeError("handler failed")

    consumer = QueueConsumer(store, "q", QueueSettings(poll_interval_ms=10, backoff_ms=60_000), fails)
    caplog.set_level(logging.INFO, logger="iii_engine.modules.queue.consumer")
    consumer.start()
    try:
        if again:
            await until(lambda: store.retries[job.id] == 2)
            await until(lambda: store.held() == {"q": QueueCounts(0, 0, 1, 0)})  # put off until its retry
        else:
            await until(lambda: any("not tried again (it may have been applied)" in r.getMessage()
                                    for r in caplog.records))
    finally:
        await consumer.stop()
    assert store.retries[job.id] == (2 if again else 1)
