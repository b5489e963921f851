"""A store that fails while the consumer finishes jobs (Redis down as their handlers end) gets one line per job,
naming the job and the error, with the traceback at debug level only.

Before: ``log.exception`` per job: at concurrency 4, one outage logged 7 records carrying 18 chained tracebacks,
beside the poll failures' single rate-limited line.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from iii_engine.modules.queue.consumer import QueueConsumer
from iii_engine.modules.queue.settings import QueueSettings
from iii_engine.modules.queue.store import Job, MemoryQueueStore

pytestmark = pytest.mark.timeout(30)

WAIT = 10.0
JOBS = 4


class AckFails(MemoryQueueStore):
    """Acks fail with a chained error, as redis-py's do when the connection is lost."""

    def __init__(self) -> None:
        super().__init__()
        self.acks = 0
        self.all_acked = asyncio.Event()

    async def ack(self, queue: str, job: Job) -> None:
        self.acks += 1
        if self.acks >= JOBS:
            self.all_acked.set()
        try:
            raise OSError("Connection reset by peer")
        except OSError as cause:
            raise ConnectionError("Error while reading from 127.0.0.1:6379") from cause


async def test_a_failed_finish_is_one_line_per_job_naming_it_and_the_error(caplog: pytest.LogCaptureFixture) -> None:
    store = AckFails()
    ids = []
    for n in range(JOBS):
        job = Job.new("q", "f", {"n": n})
        ids.append(job.id)
        await store.push("q", job)
    consumer = QueueConsumer(store, "q", QueueSettings(concurrency=JOBS, poll_interval_ms=10),
                             lambda job: asyncio.sleep(0))
    caplog.set_level(logging.DEBUG, logger="iii_engine.modules.queue.consumer")
    consumer.start()
    try:
        await asyncio.wait_for(store.all_acked.wait(), WAIT)
    finally:
        await consumer.stop()
    told = [r for r in caplog.records if "finishing or releasing" in r.getMessage()]
    loud = [r for r in told if r.levelno >= logging.WARNING]
    assert len(loud) == JOBS, [r.getMessage() for r in told]
    assert all(r.exc_info is None for r in loud), "a traceback at error level"
    for job_id in ids:
        line = next(r.getMessage() for r in loud if job_id in r.getMessage())
        assert "ConnectionError: Error while reading from 127.0.0.1:6379" in line, line
    # the traceback is still there for whoever turns debug on
    assert sum(1 for r in told if r.levelno == logging.DEBUG and r.exc_info) == JOBS
