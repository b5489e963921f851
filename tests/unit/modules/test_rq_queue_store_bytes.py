"""Attack R-Q on the in-memory queue store's byte count (``max_memory_bytes``).

A long random mix of every store step (push, a push repeated, claim, ack, retry with a changed payload, dead letter,
release, lease recovery, redrive, discard, forget, late steps of a lost lease, FIFO groups) must keep the counted
bytes equal to what the store really holds (each job's data as JSON text, its function id and lane, a fixed overhead
per job or dead letter, a dead letter's error), and bring them back to 0 once everything is done or discarded.
Before: a retry kept the job's first size (``attempts`` 9 → 10 is one byte more, a changed payload any number), a dead
letter counted its job's bytes only (not its error and ``failed_at``), and a push repeated for one job counted it twice.
"""

from __future__ import annotations

import random
import sys
from dataclasses import replace
from typing import Any

import pytest

from iii.wire import dumps
from iii_engine.modules.queue.store import HELD_OVERHEAD, DeadLetter, Job, MemoryQueueStore, QueueFull, StoreFull

QUEUES = ("__fn_queue::a", "__topic::b", "__topic::c")
TEXT = ("x", "é", "日本", "🙂", "\n\"\\")  # one to four UTF-8 bytes per character, escapes


def counted(payload: bytes, function_id: str | None, lane: str) -> int:
    """What the store counts for one job: its data's JSON text, a fixed overhead, its function id's and lane's strs."""
    return len(payload) + HELD_OVERHEAD + (0 if function_id is None else sys.getsizeof(function_id)) \
        + sys.getsizeof(lane)


def job_bytes(job: Job) -> int:
    return counted(dumps(job.data).encode(), job.function_id, job.lane)


def letter_bytes(letter: DeadLetter) -> int:
    return job_bytes(letter.job) + sys.getsizeof(letter.error)


def real_bytes(store: MemoryQueueStore) -> int:
    """What the store holds, measured from scratch: each job's and each dead letter's count from what it keeps."""
    total = 0
    for q in store._queues.values():
        total += sum(counted(held.payload, held.function_id, held.lane) for held in q.jobs.values())
        total += sum(counted(held.job.payload, held.job.function_id, held.job.lane) + sys.getsizeof(held.error)
                     for held in q.dlq.values())
    return total


def check_lanes(store: MemoryQueueStore) -> None:
    """Each lane with jobs is listed exactly once, in ready, active or delayed; each job is in exactly one lane."""
    for q in store._queues.values():
        listed = [*q.ready, *q.active, *(entry[2] for entry in q.delayed)]
        assert sorted(listed) == sorted(q.lanes)
        ids = [job_id for jobs in q.lanes.values() for job_id in jobs]
        assert sorted(ids) == sorted(q.jobs)
        assert not set(q.jobs) & set(q.dlq)


def payload(rng: random.Random) -> Any:
    return {"t": rng.choice(TEXT) * rng.randrange(0, 60), "n": rng.randrange(10**rng.randrange(1, 12))}


async def drain(store: MemoryQueueStore) -> None:
    """Finish every job and discard every dead letter."""
    for name, q in list(store._queues.items()):
        await store.recover(name, now_ms=2**62)
        while (job := await store.claim(name, now_ms=2**62, lease_ms=1)) is not None:
            await store.ack(name, job)
        for job_id in list(q.dlq):
            assert await store.discard(name, job_id) == 1
        await store.forget(name)


@pytest.mark.parametrize("seed", range(12))
async def test_counted_bytes_equal_real_bytes_after_a_random_mix_and_end_at_zero(seed: int) -> None:
    rng = random.Random(seed)
    limit = rng.choice([None, 4000, 20000])
    store = MemoryQueueStore(max_bytes=limit)
    claimed: list[tuple[str, Job]] = []  # jobs an engine holds (or held: a late step of a lost lease)
    pushed: list[tuple[str, Job]] = []
    now = 0
    for step in range(600):
        name = rng.choice(QUEUES)
        op = rng.randrange(13)
        now += rng.randrange(0, 50)
        if op <= 2:
            group = rng.choice([None, None, "g1", "g2", "日本"])
            job = Job.new(name, None if "topic" in name else "f", payload(rng), group)
            try:
                await store.push(name, job, max_jobs=rng.choice([None, 5, 50]))
                pushed.append((name, job))
            except StoreFull as full:
                assert limit is not None and full.used + full.size > limit
        elif op == 3 and pushed:
            try:
                await store.push(*rng.choice(pushed))  # the same push again (a client's retry)
            except StoreFull:
                pass  # its job was done, and there is no room for it now
        elif op <= 5:
            job = await store.claim(name, now_ms=now, lease_ms=rng.randrange(1, 200))
            if job is not None:
                claimed.append((name, job))
        elif op == 6 and claimed:
            await store.ack(*claimed.pop(rng.randrange(len(claimed))))
        elif op == 7 and claimed:
            name, job = claimed.pop(rng.randrange(len(claimed)))
            changed = replace(job, attempts=job.attempts + rng.choice([1, 9, 99_999]),
                              data=rng.choice([job.data, payload(rng)]))
            await store.retry(name, changed, due_ms=now + rng.randrange(0, 100))
        elif op == 8 and claimed:
            name, job = claimed.pop(rng.randrange(len(claimed)))
            tried = replace(job, attempts=job.attempts + 1)
            error = rng.choice(["function call failed", "é" * rng.randrange(0, 40)])
            await store.dead(name, DeadLetter(tried, error, now + 1_700_000_000_000))
        elif op == 9 and claimed:
            await store.release(*claimed.pop(rng.randrange(len(claimed))))
        elif op == 10:
            await store.recover(name, now_ms=now)  # held lanes past their lease: their holder's steps come late
        elif op == 11:
            q = store._queues.get(name)
            one = rng.choice([None, *(list(q.dlq) if q else []), "no-such-letter"])
            try:
                await store.redrive(name, one, max_jobs=rng.choice([None, 3, 50]))
            except QueueFull:
                pass
        else:
            q = store._queues.get(name)
            if q and q.dlq and rng.random() < 0.7:
                await store.discard(name, rng.choice(list(q.dlq)))
            else:
                await store.forget(name)
        assert store.used_bytes == real_bytes(store), f"step {step}, op {op}"
        assert store.used_bytes >= 0
        check_lanes(store)
    await drain(store)
    assert store._queues == {}
    assert store.used_bytes == 0


async def test_a_retry_that_grows_the_job_counts_its_new_size() -> None:
    store = MemoryQueueStore()
    job = Job.new("q", "fn", "x", group="g")
    await store.push("q", job)
    claimed = await store.claim("q", now_ms=0, lease_ms=1000)
    assert claimed is not None
    await store.retry("q", replace(claimed, attempts=10, data="x" * 1000), due_ms=0)
    assert store.used_bytes == real_bytes(store) == job_bytes(replace(job, attempts=10, data="x" * 1000))


async def test_a_dead_letter_counts_its_error_and_failed_at() -> None:
    store = MemoryQueueStore()
    job = Job.new("q", "fn", "x")
    await store.push("q", job)
    claimed = await store.claim("q", now_ms=0, lease_ms=1000)
    assert claimed is not None
    letter = DeadLetter(replace(claimed, attempts=3), "e" * 500, 1_700_000_000_000)
    await store.dead("q", letter)
    assert store.used_bytes == letter_bytes(letter)
    assert await store.redrive("q", job.id) == 1
    assert store.used_bytes == job_bytes(job)  # back to a job: no error
    claimed = await store.claim("q", now_ms=0, lease_ms=1000)
    assert claimed is not None
    await store.ack("q", claimed)
    assert store.used_bytes == 0


async def test_a_push_repeated_for_one_job_stores_and_counts_it_once() -> None:
    store = MemoryQueueStore()
    job = Job.new("q", "fn", "x" * 100)
    assert await store.push("q", job) and await store.push("q", job)
    assert store.used_bytes == job_bytes(job)
    claimed = await store.claim("q", now_ms=0, lease_ms=1000)
    assert claimed is not None
    await store.ack("q", claimed)
    assert await store.claim("q", now_ms=0, lease_ms=1000) is None  # it ran once
    assert store.used_bytes == 0


async def test_an_enqueue_exactly_at_the_limit_fits_and_one_byte_more_does_not() -> None:
    job = Job.new("q", "fn", "x" * 100)
    size = job_bytes(job)
    exact = MemoryQueueStore(max_bytes=size)
    assert await exact.push("q", job)
    assert exact.used_bytes == size
    short = MemoryQueueStore(max_bytes=size - 1)
    with pytest.raises(StoreFull, match=f"a job of {size} bytes does not fit: the store holds 0 of its {size - 1}"):
        await short.push("q", job)
    assert short.used_bytes == 0
    assert await short.claim("q", now_ms=0, lease_ms=1) is None  # nothing half-stored


async def test_a_late_finish_that_empties_a_waiting_lane_does_not_let_its_next_job_run_twice() -> None:
    # Engine A's lease on group g ran out (recovered to ready); A's ack then arrives late and empties the lane, which
    # stayed listed in ready. A new message of g listed it a second time: two claims took the same job.
    store = MemoryQueueStore()
    first = Job.new("q", "fn", 1, group="g")
    await store.push("q", first)
    held = await store.claim("q", now_ms=0, lease_ms=10)
    assert held is not None
    assert await store.recover("q", now_ms=100) == 1
    await store.ack("q", held)  # late, but first is still the lane's head: it is done
    second = Job.new("q", "fn", 2, group="g")
    await store.push("q", second)
    taken = [await store.claim("q", now_ms=100, lease_ms=1000) for _ in range(2)]
    assert [job.id if job else None for job in taken] == [second.id, None]
