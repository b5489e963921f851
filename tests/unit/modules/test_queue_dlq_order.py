"""Attack on the in-memory store's dead-letter pages: ``dlq_page`` sorted every letter of the queue by ``failed_at`` at
each call, so with 200,000 dead letters five one-letter pages of ``engine::queue::dlq_messages`` took 1.07 s and held
the event loop up to 300 ms. The store now keeps its letters in ``failed_at`` order as they arrive (they arrive in
order but for a clock stepping back), and a page is a slice: checked here by the order of the pages, on both stores,
and by counting the comparisons of ``failed_at`` a page makes (none, whatever the number of letters)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from iii_engine.modules.queue.store import DeadLetter, Job, MemoryQueueStore, QueueStore
from tests.integration.modules.queue_stores import BOTH, queue_store

Q = "__fn_queue::q"


async def dead_letter(store: QueueStore, failed_at: int, n: int) -> Job:
    """Push job ``n``, claim it and make it a dead letter failed at ``failed_at``."""
    job = Job.new(Q, "f", {"n": n})
    assert await store.push(Q, job)
    claimed = await store.claim(Q, now_ms=0, lease_ms=60_000)
    assert claimed is not None and claimed.id == job.id
    await store.dead(Q, DeadLetter(replace(claimed, attempts=1), f"boom {n}", failed_at))
    return job


async def pages(store: QueueStore, limit: int) -> list[int]:
    """Every dead letter's ``n``, page after page of ``limit``."""
    seen: list[int] = []
    offset = 0
    while page := await store.dlq_page(Q, offset, limit):
        assert len(page) <= limit
        seen += [letter.job.data["n"] for letter in page]
        offset += limit
    return seen


@pytest.mark.parametrize("kind", BOTH)
async def test_pages_are_oldest_failure_first_also_for_letters_arriving_out_of_order(kind: str) -> None:
    # letter n failed at FAILED[n]: most arrive in order, some not (a clock stepping back)
    failed = [100, 200, 150, 300, 50, 400, 350, 500, 10, 600, 450]
    by_failure = sorted(range(len(failed)), key=lambda n: failed[n])
    async with queue_store(kind, "dlq-order") as store:
        jobs = [await dead_letter(store, at, n) for n, at in enumerate(failed)]
        for limit in (1, 3, 4, 50):
            assert await pages(store, limit) == by_failure
        assert [letter.failed_at for letter in await store.dlq_page(Q, 2, 3)] == sorted(failed)[2:5]
        assert await store.dlq_page(Q, len(failed), 5) == []

        # one letter discarded and one redriven from the middle: the rest keep their order
        assert await store.discard(Q, jobs[3].id) == 1
        assert await store.redrive(Q, jobs[6].id) == 1
        rest = [n for n in by_failure if n not in (3, 6)]
        assert await pages(store, 2) == rest
        redriven = await store.claim(Q, now_ms=0, lease_ms=60_000)
        assert redriven is not None and redriven.id == jobs[6].id
        await store.dead(Q, DeadLetter(redriven, "again", 5))  # now the oldest failure
        assert await pages(store, 4) == [6, *rest]

        # all of them back to the queue, oldest failure first
        assert await store.redrive(Q, None) == len(rest) + 1
        assert await store.dlq_page(Q, 0, 10) == []
        order = []
        while (job := await store.claim(Q, now_ms=0, lease_ms=60_000)) is not None:
            order.append(job.data["n"])
            await store.ack(Q, job)
        assert order == [6, *rest]


class Counted(int):
    """A ``failed_at`` that counts the comparisons made with it (a sort of n letters makes about n)."""

    compared = 0

    def _count(self, other: Any, op: str) -> bool:
        Counted.compared += 1
        result: bool = getattr(int(self), op)(other)
        return result

    def __lt__(self, other: Any) -> bool:
        return self._count(other, "__lt__")

    def __le__(self, other: Any) -> bool:
        return self._count(other, "__le__")

    def __gt__(self, other: Any) -> bool:
        return self._count(other, "__gt__")

    def __ge__(self, other: Any) -> bool:
        return self._count(other, "__ge__")

    def __eq__(self, other: object) -> bool:
        return self._count(other, "__eq__")

    __hash__ = int.__hash__


@pytest.mark.parametrize("size", [100, 5_000])
async def test_a_page_makes_no_comparison_whatever_the_number_of_letters(size: int) -> None:
    store = MemoryQueueStore()
    for n in range(size):
        await dead_letter(store, Counted(1_700_000_000_000 + n // 3), n)  # ties too
    Counted.compared = 0
    first = await store.dlq_page(Q, 0, 10)
    deep = await store.dlq_page(Q, size - 10, 10)
    assert Counted.compared == 0  # before: 2 * (size - 1), a sort of every letter at each page
    assert [letter.job.data["n"] for letter in first + deep] == [*range(10), *range(size - 10, size)]
