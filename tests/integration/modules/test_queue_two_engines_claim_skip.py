"""A claim that leaves the jobs of some functions to other engines sharing the store (``skip_functions``): it takes
the first ready job of any other function, moves the skipped lanes to the tail of *ready* for the other engines, and
looks past a bounded number of them per call (and, on Redis, of their bytes: finding a job's function copies its
whole body). The Redis store (a real Redis) and the in-memory one behave alike.

Before: ``claim`` took no ``skip_functions``, and an engine lacking a function claimed its jobs only to put them off.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from iii_engine.modules.queue.redis_store import SKIP_BYTES, SKIP_LOOK, RedisQueueStore
from iii_engine.modules.queue.store import QueueStore
from tests.integration.modules.queue_stores import BOTH, push_job, queue_store

pytestmark = pytest.mark.timeout(30)

LEASE = 60_000


@pytest.fixture(params=BOTH)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[QueueStore]:
    async with queue_store(request.param, "claim-skip") as opened:
        yield opened


async def test_a_claim_takes_the_first_job_of_a_function_not_skipped(store: QueueStore) -> None:
    # The payload names the skipped function as a function_id of its own: only the job's own field counts.
    decoy = await push_job(store, "here", {"function_id": "there", "text": '"function_id":"there"'})
    skipped = [await push_job(store, "there", n) for n in range(3)]
    mine = await push_job(store, "here", "mine")
    first = await store.claim("q", now_ms=0, lease_ms=LEASE, skip_functions={"there"})
    assert first is not None and first.id == decoy.id
    second = await store.claim("q", now_ms=0, lease_ms=LEASE, skip_functions={"there"})
    assert second is not None and second.id == mine.id
    assert await store.claim("q", now_ms=0, lease_ms=LEASE, skip_functions={"there"}) is None
    # The skipped jobs are still there, in their order, for an engine that serves their function.
    taken = [await store.claim("q", now_ms=0, lease_ms=LEASE) for _ in skipped]
    assert [job.id for job in taken if job is not None] == [job.id for job in skipped]


async def test_a_fifo_group_whose_head_is_skipped_is_left_whole(store: QueueStore) -> None:
    head = await push_job(store, "there", 1, group="g")
    await push_job(store, "here", 2, group="g")  # behind a head this engine leaves: not claimed out of order
    assert await store.claim("q", now_ms=0, lease_ms=LEASE, skip_functions={"there"}) is None
    claimed = await store.claim("q", now_ms=0, lease_ms=LEASE)
    assert claimed is not None and claimed.id == head.id


async def test_a_claim_looks_past_a_bounded_number_of_skipped_lanes(store: QueueStore) -> None:
    for n in range(SKIP_LOOK + 5):
        await push_job(store, "there", n)
    mine = await push_job(store, "here", "mine")
    job = await store.claim("q", now_ms=0, lease_ms=LEASE, skip_functions={"there"})
    if isinstance(store, RedisQueueStore):  # one script call holds Redis: it stops after SKIP_LOOK, the next goes on
        assert job is None
        job = await store.claim("q", now_ms=0, lease_ms=LEASE, skip_functions={"there"})
    assert job is not None and job.id == mine.id
    counts = await store.counts("q")
    assert (counts.waiting, counts.active) == (SKIP_LOOK + 5, 1)


async def test_a_claim_reads_a_bounded_number_of_bytes_to_look_past_skipped_jobs(store: QueueStore) -> None:
    # Finding a job's function reads its whole body: with large jobs a claim that looked past SKIP_LOOK of them held
    # Redis for as long as copying them all took. Two of these jobs together are past SKIP_BYTES.
    big = "y" * (SKIP_BYTES // 2)
    skipped = [await push_job(store, "there", {"n": n, "b": big}) for n in range(4)]
    mine = await push_job(store, "here", "mine")
    claims, job = 0, None
    while job is None and claims < 10:
        job = await store.claim("q", now_ms=0, lease_ms=LEASE, skip_functions={"there"})
        claims += 1
    assert job is not None and job.id == mine.id
    # Redis: each claim looked past one large job and ended (the next goes on); in memory nothing is copied.
    expected = len(skipped) if isinstance(store, RedisQueueStore) else 1
    assert claims == expected, f"found the job after {claims} claims, {expected} expected"
    taken = [await store.claim("q", now_ms=0, lease_ms=LEASE) for _ in skipped]
    assert [job.id for job in taken if job is not None] == [job.id for job in skipped]
