"""Attack R-Q on the Redis queue store's idempotent push and lane bookkeeping.

* A push whose reply was lost is retried by redis-py (by default since 6.0, or with ``retry_on_timeout``). The push
  script answered "stored" again only while the job was still in the ``jobs`` hash: a retry arriving after another
  engine had already run the job (or moved it to the DLQ) stored it afresh, and it ran a second time.
* A late finishing step (its engine's lease ran out) that emptied a lane waiting in *ready* left the lane listed
  there; the next push to the lane (a FIFO group's next message) listed it again, and two claims ran that message at
  once.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import redis.asyncio as aioredis
from test_aq_queue_lost_push_reply import MARK, ReplyLosingProxy

from iii_engine.modules.queue.redis_store import RedisQueueStore
from iii_engine.modules.queue.store import DeadLetter, Job, QueueCounts, QueueFull
from tests.services import require_redis

pytestmark = pytest.mark.redis

Q = "__fn_queue::q"
WAIT = 5.0


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    url = require_redis()
    chosen = f"rq-{uuid.uuid4().hex[:12]}:"
    yield chosen
    client = aioredis.Redis.from_url(url)
    keys = [k async for k in client.scan_iter(match=f"{chosen}*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def store(prefix: str) -> AsyncIterator[RedisQueueStore]:
    opened = RedisQueueStore(require_redis(), key_prefix=prefix)
    yield opened
    await opened.close()


@pytest.mark.parametrize("outcome", ["done", "dead letter", "discarded"])
async def test_a_push_retried_after_its_job_left_the_queue_does_not_store_it_again(
        prefix: str, store: RedisQueueStore, outcome: str) -> None:
    host, port = require_redis().split("//")[1].split("/")[0].split(":")
    proxy = ReplyLosingProxy(host, int(port))
    url = await proxy.start() + "?socket_timeout=1&retry_on_timeout=true"
    pusher = RedisQueueStore(url, key_prefix=prefix)
    # the script loaded in Redis first: the reply lost must be the push's, not a NOSCRIPT answer
    assert await store.push("__fn_queue::other", Job.new("__fn_queue::other", "fn", 0))
    try:
        job = Job.new(Q, "fn", {"m": MARK.decode()}, group="g")
        push = asyncio.ensure_future(pusher.push(Q, job))
        while not proxy.lost:  # noqa: ASYNC110 - the proxy reports no event; Redis ran the push once this is 1
            await asyncio.sleep(0.002)
        # another engine runs the job before the pusher's client gives up waiting for the lost reply and retries
        claimed = await store.claim(Q, now_ms=0, lease_ms=60_000)
        assert claimed is not None and claimed.id == job.id
        if outcome == "done":
            await store.ack(Q, claimed)
        else:
            await store.dead(Q, DeadLetter(replace(claimed, attempts=1), "function call failed", 1))
            if outcome == "discarded":
                assert await store.discard(Q, job.id) == 1
        assert await asyncio.wait_for(push, WAIT) is True  # the retry: stored (once, already run)
        assert proxy.lost == 1
        dlq = 1 if outcome == "dead letter" else 0
        assert await store.counts(Q) == QueueCounts(0, 0, 0, dlq)
        assert await store.claim(Q, now_ms=0, lease_ms=60_000) is None  # it does not run a second time
    finally:
        await pusher.close()
        await proxy.close()


async def test_the_done_ids_are_kept_for_a_bounded_time_only(prefix: str) -> None:
    store = RedisQueueStore(require_redis(), key_prefix=prefix, done_kept_ms=5000)
    client = aioredis.Redis.from_url(require_redis())
    try:
        for n in range(3):
            job = Job.new(Q, "fn", n)
            await store.push(Q, job)
            claimed = await store.claim(Q, now_ms=0, lease_ms=60_000)
            assert claimed is not None
            await store.ack(Q, claimed)
        done = store._k(Q).done
        assert await client.zcard(done) == 3
        assert 0 < await client.pttl(done) <= 5000  # the key goes once no job left for the window
        # an id older than the window is trimmed by the next finish
        await client.zadd(done, {"old": 1})
        job = Job.new(Q, "fn", 9)
        await store.push(Q, job)
        claimed = await store.claim(Q, now_ms=0, lease_ms=60_000)
        assert claimed is not None
        await store.ack(Q, claimed)
        assert await client.zscore(done, "old") is None and await client.zcard(done) == 4
        with pytest.raises(ValueError, match="done_kept_ms"):
            RedisQueueStore(require_redis(), done_kept_ms=0)
    finally:
        await client.aclose()
        await store.close()


async def test_a_late_finish_that_empties_a_waiting_lane_does_not_let_its_next_job_run_twice(
        store: RedisQueueStore) -> None:
    first = Job.new(Q, "fn", 1, group="g")
    await store.push(Q, first)
    held = await store.claim(Q, now_ms=0, lease_ms=10)
    assert held is not None
    assert await store.recover(Q, now_ms=100) == 1  # engine A's lease ran out
    await store.ack(Q, held)  # A's ack arrives late; first is still the head: done
    second = Job.new(Q, "fn", 2, group="g")
    await store.push(Q, second)
    taken = [await store.claim(Q, now_ms=100, lease_ms=60_000) for _ in range(2)]
    assert [job.id if job else None for job in taken] == [second.id, None]


async def test_a_lane_listed_in_ready_while_it_is_held_is_not_claimed_twice(store: RedisQueueStore) -> None:
    # What an older version left in a store: lane g listed in ready while an engine holds it.
    client = aioredis.Redis.from_url(require_redis())
    try:
        await store.push(Q, Job.new(Q, "fn", 1, group="g"))
        assert await store.claim(Q, now_ms=0, lease_ms=60_000) is not None
        await client.rpush(store._k(Q).ready, "g:g")
        assert await store.claim(Q, now_ms=0, lease_ms=60_000) is None
        assert await store.counts(Q) == QueueCounts(0, 1, 0, 0)
    finally:
        await client.aclose()


async def _check_lanes(client: aioredis.Redis, store: RedisQueueStore, queue: str) -> None:
    """Each lane with jobs is listed exactly once (ready, active or delayed); each job id is in exactly one lane
    and each lane's ids name stored jobs."""
    k = store._k(queue)
    ready = [x.decode() for x in await client.lrange(k.ready, 0, -1)]
    active = [x.decode() for x in await client.zrange(k.active, 0, -1)]
    delayed = [x.decode() for x in await client.zrange(k.delayed, 0, -1)]
    # a large COUNT: SCAN walks the whole database, and at the default 10 keys a step a shared server holding a
    # few thousand other keys made each check hundreds of round trips (25-28 s a case)
    lane_keys = [x.decode() async for x in client.scan_iter(match=k.lane.replace("[", "\\[") + "*", count=1000)]
    lanes = {key[len(k.lane):]: [x.decode() for x in await client.lrange(key, 0, -1)] for key in lane_keys}
    assert sorted(ready + active + delayed) == sorted(lanes)
    ids = [job_id for jobs in lanes.values() for job_id in jobs]
    assert sorted(ids) == sorted(x.decode() for x in await client.hkeys(k.jobs))


@pytest.mark.parametrize("seed", range(3))
async def test_lanes_stay_listed_once_through_a_random_mix_of_steps(store: RedisQueueStore, seed: int) -> None:
    rng = random.Random(seed)
    client = aioredis.Redis.from_url(require_redis())
    claimed: list[Job] = []
    now = 0
    try:
        for _ in range(250):
            op = rng.randrange(9)
            now += rng.randrange(0, 50)
            if op <= 1:
                await store.push(Q, Job.new(Q, "fn", rng.randrange(100), rng.choice([None, "g1", "g2"])))
            elif op <= 3:
                job = await store.claim(Q, now_ms=now, lease_ms=rng.randrange(1, 200))
                if job is not None:
                    claimed.append(job)
            elif op == 4 and claimed:
                await store.ack(Q, claimed.pop(rng.randrange(len(claimed))))
            elif op == 5 and claimed:
                job = claimed.pop(rng.randrange(len(claimed)))
                await store.retry(Q, replace(job, attempts=job.attempts + 1), due_ms=now + rng.randrange(100))
            elif op == 6 and claimed:
                job = claimed.pop(rng.randrange(len(claimed)))
                await store.dead(Q, DeadLetter(replace(job, attempts=job.attempts + 1), "function call failed", now))
            elif op == 7:
                await store.recover(Q, now_ms=now)  # held lanes past their lease: their holders' steps come late
            else:
                try:
                    await store.redrive(Q, None, max_jobs=rng.choice([None, 3]))
                except QueueFull:
                    pass
            await _check_lanes(client, store, Q)
    finally:
        await client.aclose()
