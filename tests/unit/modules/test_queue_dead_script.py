"""The Redis dead-letter move (one Lua script) against a real Redis: a call short of an argument changes nothing
(a script is atomic, not transactional: it failed half-way, the job both a dead letter and active), and a big job
goes to the DLQ and back whole."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.exceptions import ResponseError
from test_queue_stop import REDIS_URL, _drop_keys

from iii_engine.modules.queue.redis_store import RedisQueueStore
from iii_engine.modules.queue.store import DeadLetter, Job, QueueCounts

pytestmark = pytest.mark.redis

Q = "__fn_queue::q"


@pytest.fixture
async def store() -> AsyncIterator[RedisQueueStore]:
    prefix = f"test-{uuid.uuid4()}:"
    opened = RedisQueueStore(REDIS_URL, key_prefix=prefix)
    yield opened
    await opened.close()
    await _drop_keys(prefix)


async def test_a_dead_letter_move_short_of_an_argument_changes_nothing(store: RedisQueueStore) -> None:
    job = Job.new(Q, "f", 1)
    await store.push(Q, job)
    assert await store.claim(Q, now_ms=0, lease_ms=60_000) == job
    k = store._k(Q)
    keys = [k.jobs, k.ready, k.active, k.delayed, k.dlq, k.dlq_entries]
    short: list[str | int] = [k.lane, job.lane, job.id, 1]
    for args in (short, [*short, "{}", k.counted, "extra"]):
        with pytest.raises(ResponseError, match="dead letter move: 6 keys and 6 arguments expected"):
            await store._dead(keys=keys, args=args)
    with pytest.raises(ResponseError, match="6 keys"):
        await store._dead(keys=keys[:5], args=[k.lane, job.lane, job.id, 1, "{}", k.counted])
    assert await store.counts(Q) == QueueCounts(0, 1, 0, 0)
    await store.dead(Q, DeadLetter(job, "function call failed", 1))
    assert await store.counts(Q) == QueueCounts(0, 0, 0, 1)


async def test_a_big_job_goes_to_the_dlq_and_back_whole(store: RedisQueueStore) -> None:
    big = {"blob": "x" * (16 * 1024 * 1024), "n": 1}
    job = Job.new(Q, "f", big)
    await store.push(Q, job)
    claimed = await store.claim(Q, now_ms=0, lease_ms=60_000)
    assert claimed is not None
    await store.dead(Q, DeadLetter(claimed, "function call failed", 1))
    [letter] = await store.dlq_page(Q, 0, 10)
    assert letter.job.data == big
    assert await store.redrive(Q, job.id) == 1
    again = await store.claim(Q, now_ms=0, lease_ms=60_000)
    assert again is not None and again.data == big and again.attempts == 0
    await store.ack(Q, again)
    assert await store.counts(Q) == QueueCounts(0, 0, 0, 0)
