"""A claim that puts off, in the store, the lanes whose head job names a function missing here (``put_off``): it
delays each such lane until its function's look, its job unchanged and no attempt counted, takes the first job of any
other function, puts off a bounded number of lanes per call and says when it stopped at that bound with more lanes
ready. The Redis store (a real Redis) and the in-memory one behave alike.

Before: the store knew nothing of missing functions; the consumer claimed each such job, found its function missing
and put it off with a store round trip of its own. On Redis 20,000 of them, looked at every few seconds, kept 200
runnable jobs of the same queue waiting 90 s (at 80 % of a core), until the function's grace ended.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from iii_engine.modules.queue.redis_store import SKIP_BYTES
from iii_engine.modules.queue.store import PUT_OFF_LOOK, PutOff, QueueStore
from tests.integration.modules.queue_stores import BOTH, push_job, queue_store

pytestmark = pytest.mark.timeout(30)

LEASE = 60_000
LOOK = 5_000


@pytest.fixture(params=BOTH)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[QueueStore]:
    async with queue_store(request.param, "put-off") as opened:
        yield opened


async def test_a_claim_puts_off_the_lanes_of_missing_functions_and_takes_the_next(store: QueueStore) -> None:
    # The payload names the missing function as a function_id of its own: only the job's own field counts.
    missing = await push_job(store, "gone", {"n": 1})
    decoy = await push_job(store, "here", {"function_id": "gone", "text": '"function_id":"gone"'})
    claim = await store.claim_next("q", now_ms=0, lease_ms=LEASE, put_off={"gone": LOOK})
    assert claim.job is not None and claim.job.id == decoy.id
    assert claim.put_off == ((missing.lane, "gone", LOOK),) and not claim.more
    assert await store.next_due_ms("q") == LOOK  # delayed until its look, not claimed
    counts = await store.counts("q")
    assert (counts.active, counts.delayed) == (1, 1)
    # at its look, the job comes back as it was: no attempt counted, its data whole
    again = await store.claim("q", now_ms=LOOK, lease_ms=LEASE)
    assert again is not None and (again.id, again.attempts, again.data) == (missing.id, 0, {"n": 1})


async def test_names_are_matched_whole_whatever_their_characters(store: QueueStore) -> None:
    odd = 'we"ird\\fn \u00e9\u4e2d'
    prefix = await push_job(store, "fn", 1)  # a prefix of the missing function's id: not put off
    longer = await push_job(store, "fn2", 2)
    weird = await push_job(store, odd, 3)
    claim = await store.claim_next("q", now_ms=0, lease_ms=LEASE, put_off={odd: LOOK, "fn2": LOOK})
    assert claim.job is not None and claim.job.id == prefix.id
    claim = await store.claim_next("q", now_ms=0, lease_ms=LEASE, put_off={odd: LOOK, "fn2": LOOK})
    assert claim.job is None
    assert sorted(claim.put_off) == sorted([(longer.lane, "fn2", LOOK), (weird.lane, odd, LOOK)])


async def test_a_look_not_after_now_puts_nothing_off(store: QueueStore) -> None:
    job = await push_job(store, "gone", 1)
    claim = await store.claim_next("q", now_ms=1000, lease_ms=LEASE, put_off={"gone": 1000})
    assert claim.job is not None and claim.job.id == job.id and claim.put_off == ()


async def test_a_claim_puts_off_a_bounded_number_of_lanes_and_says_there_is_more(store: QueueStore) -> None:
    for n in range(PUT_OFF_LOOK + 50):
        await push_job(store, "gone", n)
    runnable = await push_job(store, "here", "run me")
    first = await store.claim_next("q", now_ms=0, lease_ms=LEASE, put_off={"gone": LOOK})
    assert first.job is None and first.more and len(first.put_off) == PUT_OFF_LOOK
    second = await store.claim_next("q", now_ms=0, lease_ms=LEASE, put_off={"gone": LOOK})
    assert second.job is not None and second.job.id == runnable.id
    assert len(second.put_off) == 50 and not second.more
    assert (await store.counts("q")).delayed == PUT_OFF_LOOK + 50


async def test_lanes_left_to_other_engines_alone_never_ask_for_more(store: QueueStore) -> None:
    # skipped lanes go to the tail of ready and stay there: "more" would make a caller claim in a loop
    for n in range(3):
        await push_job(store, "there", n)
    claim = await store.claim_next("q", now_ms=0, lease_ms=LEASE, skip_functions={"there"}, put_off={"gone": LOOK})
    assert claim.job is None and not claim.more and claim.put_off == ()
    assert (await store.counts("q")).waiting == 3


async def test_a_fifo_group_whose_head_waits_keeps_its_order(store: QueueStore) -> None:
    head = await push_job(store, "gone", 1, group="g")
    behind = await push_job(store, "here", 2, group="g")
    claim = await store.claim_next("q", now_ms=0, lease_ms=LEASE, put_off={"gone": LOOK})
    assert claim.job is None and claim.put_off == (("g:g", "gone", LOOK),)
    # the group's next message waits behind its head, as it does behind a retry
    assert await store.claim("q", now_ms=LOOK - 1, lease_ms=LEASE) is None
    first = await store.claim("q", now_ms=LOOK, lease_ms=LEASE)
    assert first is not None and first.id == head.id
    await store.ack("q", first)
    second = await store.claim("q", now_ms=LOOK, lease_ms=LEASE)
    assert second is not None and second.id == behind.id


async def test_looks_kept_by_the_store_follow_their_changes(store: QueueStore) -> None:
    # a PutOff sends a store that keeps the looks (Redis: a hash) its changes only; a plain mapping replaces them
    looks = PutOff()
    looks.set("gone", LOOK)
    first = await push_job(store, "gone", 1)
    claim = await store.claim_next("q", now_ms=0, lease_ms=LEASE, put_off=looks)
    assert claim.job is None and claim.put_off == ((first.lane, "gone", LOOK),)
    looks.set("gone", 2 * LOOK)
    second = await push_job(store, "gone", 2)
    claim = await store.claim_next("q", now_ms=0, lease_ms=LEASE, put_off=looks)
    assert claim.put_off == ((second.lane, "gone", 2 * LOOK),)  # the new look, not the one kept before
    looks.drop("gone")
    looks.set("other", 3 * LOOK)
    taken = await store.claim_next("q", now_ms=LOOK, lease_ms=LEASE, put_off=looks)
    assert taken.job is not None and taken.job.id == first.id and taken.put_off == ()  # dropped: claimed
    await store.ack("q", taken.job)
    claim = await store.claim_next("q", now_ms=2 * LOOK, lease_ms=LEASE, put_off={"elsewhere": 3 * LOOK})
    assert claim.job is not None and claim.job.id == second.id  # replaced: "gone" is no longer kept
    assert looks.take_changes() == {}


@pytest.mark.redis
async def test_redis_puts_off_a_bounded_number_of_bytes_per_claim() -> None:
    async with queue_store("redis", "put-off-bytes") as store:
        big = "x" * (SKIP_BYTES // 4)
        for n in range(8):
            await push_job(store, "gone", {"n": n, "pad": big})
        runnable = await push_job(store, "here", 1)
        calls, taken = 0, None
        while taken is None:
            claim = await store.claim_next("q", now_ms=0, lease_ms=LEASE, put_off={"gone": LOOK})
            calls += 1
            assert len(claim.put_off) <= 5  # 256 KB of bodies, and the one that passes it, per call
            assert claim.job is not None or claim.more
            taken = claim.job
        assert taken.id == runnable.id and calls >= 2
