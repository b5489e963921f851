"""A finishing step (ack, dead letter, retry) that comes after another engine took the job over (its lease ran out)
and finished it: nothing changes, so the job is not resurrected as a dead letter and the next job of its FIFO lane
keeps the lease the other engine holds. In-memory store and real Redis (unique key prefix per test)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest
import test_queue_stop

from iii_engine.modules.queue.store import DeadLetter, Job, QueueCounts, QueueStore

Q = "__fn_queue::q"
stores = test_queue_stop.stores  # the fixture: memory, and real Redis under a key prefix of its own

Finish = Callable[[QueueStore, Job], Awaitable[None]]


async def _ack(store: QueueStore, job: Job) -> None:
    await store.ack(Q, job)


async def _dead(store: QueueStore, job: Job) -> None:
    await store.dead(Q, DeadLetter(job, "function call failed", 1))


async def _retry(store: QueueStore, job: Job) -> None:
    await store.retry(Q, replace(job, attempts=job.attempts + 1), due_ms=0)


async def _release(store: QueueStore, job: Job) -> None:
    await store.release(Q, job)


@pytest.mark.parametrize("late", [_ack, _dead, _retry, _release], ids=["ack", "dead", "retry", "release"])
@pytest.mark.parametrize("earlier", [_ack, _dead], ids=["acked", "dead"])
async def test_a_late_finish_of_a_job_already_finished_elsewhere_touches_nothing(
    stores: Callable[[], QueueStore], earlier: Finish, late: Finish,
) -> None:
    """The engine that lost the job's lease finishes it after the engine that recovered it: the job must not come
    back as a dead letter (a redrive would run it again), and the next job of its FIFO lane, now running on the
    other engine, must keep its lease (else a third engine runs it at the same time, out of order)."""
    store = stores()
    first, second = Job.new(Q, "f", 1, group="g"), Job.new(Q, "f", 2, group="g")
    await store.push(Q, first)
    await store.push(Q, second)
    assert await store.claim(Q, now_ms=0, lease_ms=10) == first
    assert await store.recover(Q, now_ms=100) == 1  # the first engine's lease ran out
    assert await store.claim(Q, now_ms=100, lease_ms=60_000) == first
    await earlier(store, first)
    assert await store.claim(Q, now_ms=100, lease_ms=60_000) == second
    before = await store.counts(Q)
    await late(store, first)  # the first engine, late
    assert await store.counts(Q) == before
    assert await store.claim(Q, now_ms=100, lease_ms=60_000) is None  # the lane is still held: second not run twice
    assert await store.redrive(Q, first.id) == (1 if earlier is _dead else 0)


@pytest.mark.parametrize("late", [_ack, _dead], ids=["ack", "dead"])
async def test_a_late_finish_of_a_job_another_engine_put_off_leaves_no_empty_lane_waiting(
    stores: Callable[[], QueueStore], late: Finish,
) -> None:
    """The job did end on the first engine (done or dead): it goes, and its lane with it (a lane left delayed with
    no job in it counted as -1 waiting)."""
    store = stores()
    job = Job.new(Q, "f", 1)
    await store.push(Q, job)
    assert await store.claim(Q, now_ms=0, lease_ms=10) == job
    assert await store.recover(Q, now_ms=100) == 1
    assert await store.claim(Q, now_ms=100, lease_ms=60_000) == job
    await store.retry(Q, replace(job, attempts=1), due_ms=10**6)  # the second engine's attempt failed
    await late(store, job)
    assert await store.counts(Q) == QueueCounts(0, 0, 0, 1 if late is _dead else 0)
    assert await store.next_due_ms(Q) is None
    assert await store.claim(Q, now_ms=10**7, lease_ms=60_000) is None
