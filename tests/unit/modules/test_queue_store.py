"""The job store contract, run against the in-memory store and a real Redis (unique key prefix per test)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from iii_engine.modules.queue.store import DeadLetter, Job, MemoryQueueStore, QueueFull, QueueStore

REDIS_URL = "redis://127.0.0.1:6379/0"
Q = "__fn_queue::q"


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[QueueStore]:
    if request.param == "memory":
        yield MemoryQueueStore()
        return
    from redis.asyncio import Redis

    from iii_engine.modules.queue.redis_store import RedisQueueStore

    prefix = f"test-{uuid.uuid4()}:"
    redis_store = RedisQueueStore(REDIS_URL, key_prefix=prefix)
    yield redis_store
    await redis_store.close()
    client = Redis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_lane_runs_head_only_and_frees_on_ack(store: QueueStore) -> None:
    a1, a2 = Job.new(Q, "f", 1, group="a"), Job.new(Q, "f", 2, group="a")
    b1 = Job.new(Q, "f", 3, group="b")
    for job in (a1, a2, b1):
        await store.push(Q, job)
    first = await store.claim(Q, now_ms=0, lease_ms=1000)
    second = await store.claim(Q, now_ms=0, lease_ms=1000)
    assert (first, second) == (a1, b1)
    assert await store.claim(Q, now_ms=0, lease_ms=1000) is None  # a2 waits behind a1
    await store.ack(Q, a1)
    assert await store.claim(Q, now_ms=0, lease_ms=1000) == a2
    counts = await store.counts(Q)
    assert (counts.active, counts.waiting) == (2, 0)


async def test_retry_delays_the_lane_until_due(store: QueueStore) -> None:
    job = Job.new(Q, "f", {"x": [1, 2]})
    await store.push(Q, job)
    claimed = await store.claim(Q, now_ms=100, lease_ms=1000)
    assert claimed is not None
    tried = Job(**{**claimed.as_dict(), "attempts": 1})
    await store.retry(Q, tried, due_ms=500)
    assert await store.next_due_ms(Q) == 500
    assert (await store.counts(Q)).delayed == 1
    assert await store.claim(Q, now_ms=499, lease_ms=1000) is None
    again = await store.claim(Q, now_ms=500, lease_ms=1000)
    assert again == tried and again.attempts == 1


async def test_dead_letters_page_redrive_and_discard(store: QueueStore) -> None:
    jobs = [Job.new(Q, "f", i) for i in range(3)]
    for i, job in enumerate(jobs):
        await store.push(Q, job)
        claimed = await store.claim(Q, now_ms=0, lease_ms=1000)
        assert claimed == job
        await store.dead(Q, DeadLetter(Job(**{**job.as_dict(), "attempts": 3}), "function call failed", 10 + i))
    page = await store.dlq_page(Q, 1, 5)
    assert [d.job.id for d in page] == [jobs[1].id, jobs[2].id]
    assert page[0].as_dict()["failed_at"] == 11
    assert await store.discard(Q, jobs[0].id) == 1
    assert await store.discard(Q, jobs[0].id) == 0
    assert await store.redrive(Q, jobs[1].id) == 1
    assert await store.redrive(Q, None) == 1
    assert (await store.counts(Q)).dlq == 0
    back = await store.claim(Q, now_ms=0, lease_ms=1000)
    assert back is not None and back.id == jobs[1].id and back.attempts == 0


async def test_release_and_expired_leases_return_jobs(store: QueueStore) -> None:
    one, two = Job.new(Q, "f", 1), Job.new(Q, "f", 2)
    await store.push(Q, one)
    await store.push(Q, two)
    assert await store.claim(Q, now_ms=0, lease_ms=100) == one
    assert await store.claim(Q, now_ms=0, lease_ms=100) == two
    await store.release(Q, two)
    assert await store.recover(Q, now_ms=50) == 0
    await store.renew(Q, [one.lane], deadline_ms=200)
    assert await store.recover(Q, now_ms=150) == 0
    assert await store.recover(Q, now_ms=200) == 1
    assert await store.claim(Q, now_ms=200, lease_ms=100) == one
    assert await store.claim(Q, now_ms=200, lease_ms=100) == two


async def test_push_with_max_jobs_refuses_past_it_counting_running_and_delayed_but_not_dead(store: QueueStore) -> None:
    jobs = [Job.new(Q, "f", i) for i in range(4)]
    assert [await store.push(Q, job, max_jobs=3) for job in jobs] == [True, True, True, False]
    running = await store.claim(Q, now_ms=0, lease_ms=1000)
    assert running is not None
    assert await store.push(Q, jobs[3], max_jobs=3) is False  # a running job still counts
    await store.dead(Q, DeadLetter(running, "boom", 1))
    assert await store.push(Q, jobs[3], max_jobs=3) is True  # a dead letter does not
    counts = await store.counts(Q)
    assert (counts.waiting + counts.active + counts.delayed, counts.dlq) == (3, 1)
    assert await store.push(Q, Job.new(Q, "f", 9)) is True  # no max_jobs: no limit


async def dead_letters(store: QueueStore, queue: str, count: int) -> list[Job]:
    """``count`` jobs pushed, claimed and moved to the dead-letter queue."""
    jobs = []
    for i in range(count):
        job = Job.new(queue, "f", i)
        assert await store.push(queue, job)
        claimed = await store.claim(queue, now_ms=0, lease_ms=1000)
        assert claimed is not None
        await store.dead(queue, DeadLetter(claimed, "boom", i))
        jobs.append(job)
    return jobs


async def held(store: QueueStore, queue: str) -> tuple[int, int]:
    counts = await store.counts(queue)
    return counts.waiting + counts.active + counts.delayed, counts.dlq


async def test_a_redrive_moves_dead_letters_only_while_the_queue_has_room(store: QueueStore) -> None:
    # before: redrive pushed every dead letter back whatever max_jobs (2 letters into a full queue of 2: 4 held)
    letters = await dead_letters(store, Q, 3)
    assert await store.push(Q, Job.new(Q, "f", "live"), max_jobs=2)
    with pytest.raises(QueueFull) as full:
        await store.redrive(Q, None, max_jobs=2)
    assert full.value.moved == 1
    assert await held(store, Q) == (2, 2)  # the two that did not fit are still dead letters
    with pytest.raises(QueueFull) as one:
        await store.redrive(Q, letters[2].id, max_jobs=2)
    assert one.value.moved == 0
    assert await store.redrive(Q, "no-such-letter", max_jobs=2) == 0  # an unknown letter is not "full"
    assert await store.redrive(Q, None) == 2  # no max_jobs: no limit, as before
    assert await held(store, Q) == (4, 0)
