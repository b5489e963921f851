"""``QueueStore.bring_forward``: delayed lanes made due now (jobs put off until their function registers), on the
in-memory store and a real Redis; a lane due sooner, held or unknown is left as it is."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_queue_store import Q, store  # noqa: F401 - the fixture

from iii_engine.modules.queue.store import Job, QueueStore


async def _delayed(store: QueueStore, due_ms: int, data: int) -> Job:  # noqa: F811 - the fixture's name
    job = Job.new(Q, "f", data)
    await store.push(Q, job)
    claimed = await store.claim(Q, now_ms=0, lease_ms=60_000)
    assert claimed == job
    await store.retry(Q, replace(job, attempts=0), due_ms=due_ms)
    return job


async def test_bring_forward_makes_only_the_named_delayed_lanes_due(store: QueueStore) -> None:  # noqa: F811
    late, other = await _delayed(store, 10_000, 1), await _delayed(store, 10_000, 2)
    soon = await _delayed(store, 100, 3)
    held = Job.new(Q, "f", 4)
    await store.push(Q, held)
    assert await store.claim(Q, now_ms=0, lease_ms=60_000) == held
    moved = await store.bring_forward(Q, [late.lane, soon.lane, held.lane, "no-such-lane"], due_ms=500)
    assert moved == 1  # soon is due before 500: never put later; held is running; the unknown lane is nothing
    assert await store.next_due_ms(Q) == 100
    assert await store.claim(Q, now_ms=499, lease_ms=60_000) == soon
    assert await store.claim(Q, now_ms=499, lease_ms=60_000) is None
    assert await store.claim(Q, now_ms=500, lease_ms=60_000) == late
    assert await store.next_due_ms(Q) == 10_000  # the lane not named keeps its time
    assert await store.claim(Q, now_ms=9_999, lease_ms=60_000) is None
    assert await store.claim(Q, now_ms=10_000, lease_ms=60_000) == other
    assert (await store.counts(Q)).active == 4


async def test_bring_forward_of_no_lane_moves_nothing(store: QueueStore) -> None:  # noqa: F811
    await _delayed(store, 10_000, 1)
    assert await store.bring_forward(Q, [], due_ms=0) == 0
    assert await store.next_due_ms(Q) == 10_000


async def test_bring_forward_moves_lanes_past_one_batch(store: QueueStore,  # noqa: F811 - the fixture
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from iii_engine.modules.queue import redis_store

    monkeypatch.setattr(redis_store, "BRING_FORWARD_BATCH", 2)  # Redis: three script calls for five lanes
    jobs = [await _delayed(store, 10_000, n) for n in range(5)]
    assert await store.bring_forward(Q, [job.lane for job in jobs], due_ms=500) == 5
    assert await store.next_due_ms(Q) == 500
