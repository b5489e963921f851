"""Leases and due times in the Redis queue store run on Redis's clock, not each engine's.

Before: engine B, its clock 120 s ahead of engine A's, took A's running job for a lost engine's ("1 job(s) of a lost
engine returned"), claimed it and ran it a second time while A's handler ran; a retry B stored was due 120 s late
for A.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import pytest
from redis.asyncio import Redis

from iii_engine.modules.queue import redis_store
from iii_engine.modules.queue.redis_store import RedisQueueStore
from iii_engine.modules.queue.store import Job, now_ms

pytestmark = pytest.mark.our_engine("Redis queue store clocks")

REDIS_URL = "redis://127.0.0.1:6379/0"
SKEW_MS = 120_000
LEASE_MS = 60_000


@asynccontextmanager
async def _stores() -> AsyncIterator[tuple[RedisQueueStore, RedisQueueStore]]:
    """Two stores (two engines) on one key prefix of the test's own, its keys deleted afterwards."""
    prefix = f"test-qclock-{uuid.uuid4()}:"
    a, b = RedisQueueStore(REDIS_URL, key_prefix=prefix), RedisQueueStore(REDIS_URL, key_prefix=prefix)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()
        client = Redis.from_url(REDIS_URL)
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@contextmanager
def _ahead(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """This engine's clock SKEW_MS ahead while inside (the store reads it for the times it converts)."""
    with monkeypatch.context() as patch:
        patch.setattr(redis_store, "_engine_now_ms", lambda: now_ms() + SKEW_MS, raising=False)
        yield now_ms() + SKEW_MS


async def test_an_engine_whose_clock_runs_ahead_does_not_take_a_running_job_for_lost(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async with _stores() as (a, b):
        await a.push("q", Job.new("q", "fn", "running on a"))
        job = await a.claim("q", now_ms=now_ms(), lease_ms=LEASE_MS)
        assert job is not None
        await a.renew("q", [job.lane], deadline_ms=now_ms() + LEASE_MS)
        with _ahead(monkeypatch) as b_now:
            assert await b.recover("q", now_ms=b_now) == 0  # was 1: the job handed back to run again
            assert await b.claim("q", now_ms=b_now, lease_ms=LEASE_MS) is None
        await a.ack("q", job)


async def test_a_retry_stored_by_an_engine_ahead_is_due_after_its_backoff_for_the_others(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async with _stores() as (a, b):
        await a.push("q", Job.new("q", "fn", "retried"))
        with _ahead(monkeypatch) as b_now:
            job = await b.claim("q", now_ms=b_now, lease_ms=LEASE_MS)
            assert job is not None
            await b.retry("q", job, due_ms=b_now + 1000)
            due_for_b = await b.next_due_ms("q")
        due_for_a = await a.next_due_ms("q")
        assert due_for_a is not None and due_for_b is not None
        assert abs(due_for_a - (now_ms() + 1000)) < 500, due_for_a - now_ms()  # was 121,000 ms away
        assert abs(due_for_b - (b_now + 1000)) < 500
        assert await a.claim("q", now_ms=now_ms(), lease_ms=LEASE_MS) is None  # not due yet for anyone
        with _ahead(monkeypatch) as b_now:
            assert await b.claim("q", now_ms=b_now, lease_ms=LEASE_MS) is None  # nor for the engine that stored it


async def test_a_step_of_the_engines_clock_after_the_read_is_followed_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The offset was kept for 10 s after a read: a step in between moved every time by its size until the next read,
    and engine B, stepped 120 s ahead after reading, took A's running job for a lost engine's (5 of 5)."""
    async with _stores() as (a, b):
        await a.push("q", Job.new("q", "fn", "running on a"))
        job = await a.claim("q", now_ms=now_ms(), lease_ms=LEASE_MS)
        assert job is not None
        await a.renew("q", [job.lane], deadline_ms=now_ms() + LEASE_MS)
        assert await b.recover("q", now_ms=now_ms()) == 0  # B has read Redis's clock with its own on time
        with _ahead(monkeypatch) as b_now:  # ... and then its clock steps 120 s ahead
            assert await b.recover("q", now_ms=b_now) == 0  # was 1
            assert await b.claim("q", now_ms=b_now, lease_ms=LEASE_MS) is None
        await a.ack("q", job)


async def test_callers_at_once_share_one_read_of_redis_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """5,000 claims at once read Redis's clock 5,000 times, the last (slowest) read winning: 602 ms off."""
    async with _stores() as (a, _):
        reads = 0
        time_of = a._redis.time

        async def counted() -> object:
            nonlocal reads
            reads += 1
            return await time_of()

        monkeypatch.setattr(a._redis, "time", counted)
        shifts = await asyncio.gather(*(a._shift() for _ in range(200)))
        assert reads == 1
        assert max(shifts) - min(shifts) < 100  # (each read at its own moment of the wall clock)
