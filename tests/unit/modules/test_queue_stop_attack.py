"""Attack on the queue consumer's stop: a handler result arriving in the stop's own turn, a job task created but not
yet begun when the stop comes, repeated and concurrent stops, a store that raises at the stop, tasks left behind,
and the tasks a finished job costs. In-memory store and real Redis (unique key prefix per test)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import pytest
import test_queue_stop
from test_queue_stop import WAIT, Gated, consumer_on, stop_once_the_loop_ended

from iii_engine.modules.queue.consumer import QueueConsumer
from iii_engine.modules.queue.store import Job, MemoryQueueStore, QueueCounts, QueueStore

Q = "__fn_queue::q"
stores = test_queue_stop.stores  # the fixture: memory, and real Redis under a key prefix of its own


def queue_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t.get_name().startswith("queue-")}


async def test_a_result_that_arrived_in_the_stops_turn_is_stored_as_done_not_run_again(
    stores: Callable[[], QueueStore],
) -> None:
    store = stores()
    answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    started = asyncio.Event()
    runs: list[Job] = []

    async def waits_for_its_answer(job: Job) -> None:
        runs.append(job)
        started.set()
        await answer

    await store.push(Q, Job.new(Q, "f", 1))
    consumer = consumer_on(store, waits_for_its_answer)
    consumer.start()
    await asyncio.wait_for(started.wait(), WAIT)
    answer.set_result(None)  # the worker's answer is in: the job task's wake-up is queued
    await consumer.stop()  # begins before that wake-up runs (not in a task of its own: bounded by stop_ms)
    assert len(runs) == 1
    assert await stores().counts(Q) == QueueCounts(0, 0, 0, 0)  # done: nothing comes back to run a second time


async def test_a_job_claimed_just_before_the_stop_whose_task_had_not_begun_is_given_back_unrun(
    stores: Callable[[], QueueStore], caplog: pytest.LogCaptureFixture,
) -> None:
    store = Gated(stores())
    gate = store.gate("claim_next", after_the_call=True)
    runs: list[Job] = []

    async def stuck(job: Job) -> None:
        runs.append(job)
        await asyncio.Event().wait()

    await store.push(Q, Job.new(Q, "f", 1))
    consumer = consumer_on(store, stuck, stop_ms=3000)
    consumer.start()
    await asyncio.wait_for(store.entered["claim_next"].wait(), WAIT)
    # The consumer loop gets the job first and makes its task; the stop's first step runs before that task's.
    gate.set()
    stopping = asyncio.create_task(consumer.stop())
    with caplog.at_level(logging.WARNING, logger="iii_engine.modules.queue.consumer"):
        await asyncio.wait_for(stopping, WAIT)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert runs == []
    assert await stores().counts(Q) == QueueCounts(1, 0, 0, 0)


async def test_stops_called_twice_and_concurrently_give_each_job_back_once_and_all_return(
    stores: Callable[[], QueueStore],
) -> None:
    store = Gated(stores())
    gate = store.gate("release")
    running = asyncio.Semaphore(0)
    cancelled: list[str] = []

    async def stuck(job: Job) -> None:
        running.release()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(job.id)
            raise

    for n in range(3):
        await store.push(Q, Job.new(Q, "f", n))
    consumer = consumer_on(store, stuck, concurrency=3)
    consumer.start()
    for _ in range(3):
        await asyncio.wait_for(running.acquire(), WAIT)
    first, second = asyncio.create_task(consumer.stop()), asyncio.create_task(consumer.stop())
    await asyncio.wait_for(store.entered["release"].wait(), WAIT)
    third = asyncio.create_task(consumer.stop())
    gate.set()
    await asyncio.wait_for(asyncio.gather(first, second, third), WAIT)
    await asyncio.wait_for(consumer.stop(), WAIT)  # once more, after the end
    assert len(cancelled) == 3 and len(set(cancelled)) == 3
    assert store.calls.count("release") == 3
    assert await stores().counts(Q) == QueueCounts(3, 0, 0, 0)
    assert queue_tasks() == set()


@pytest.mark.parametrize("failing", ["ack", "retry", "dead", "release", "claim_next", "renew", "next_due_ms"])
async def test_a_store_that_raises_at_the_stop_neither_hangs_it_nor_leaves_a_task(
    failing: str, caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryQueueStore()
    started, finish = asyncio.Event(), asyncio.Event()
    outcome = {"ack": None, "retry": RuntimeError("try again"), "dead": RuntimeError("give up")}.get(failing)

    async def handler(job: Job) -> None:
        started.set()
        await finish.wait()
        if outcome is not None:
            raise outcome

    await store.push(Q, Job.new(Q, "f", 1))
    consumer = consumer_on(store, handler, max_retries=1 if failing == "dead" else 3)
    consumer.start()
    await asyncio.wait_for(started.wait(), WAIT)

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError(f"{failing} failed")

    setattr(store, failing, broken)
    await store.push(Q, Job.new(Q, "f", 2))  # a second job for the loop to claim as it stops
    if failing != "release":
        finish.set()  # the handler ends; its outcome is stored by the stop
    with caplog.at_level(logging.WARNING):
        await asyncio.wait_for(consumer.stop(), WAIT)
    assert queue_tasks() == set()
    assert "did not answer" not in caplog.text  # failed at once: nothing to wait out


async def test_nothing_is_left_running_after_a_stop_with_jobs_at_every_stage(stores: Callable[[], QueueStore]) -> None:
    store = stores()
    started = asyncio.Semaphore(0)
    answers: dict[int, asyncio.Future[None]] = {}

    async def handler(job: Job) -> None:
        answers[job.data] = asyncio.get_running_loop().create_future()
        started.release()
        await answers[job.data]

    for n in range(6):
        await store.push(Q, Job.new(Q, "f", n))
    consumer = consumer_on(store, handler, concurrency=4, max_retries=2, backoff_ms=60_000)
    consumer.start()
    for _ in range(4):
        await asyncio.wait_for(started.acquire(), WAIT)
    answers[0].set_result(None)
    answers[1].set_exception(RuntimeError("boom"))
    await asyncio.wait_for(consumer.stop(), WAIT)
    assert queue_tasks() == set()
    left = await stores().counts(Q)
    assert left == QueueCounts(waiting=4, active=0, delayed=1, dlq=0)  # 0 done, 1 to retry, 2..5 given back


async def test_a_finished_job_costs_one_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """A task per finishing step would double the tasks (and about triple the CPU) per instant job."""
    created: dict[str, int] = {}
    loop = asyncio.get_running_loop()
    real_create_task = loop.create_task

    def counting(coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any], **kwargs: Any) -> asyncio.Task[Any]:
        name = getattr(coro, "__qualname__", "")
        if name.startswith("QueueConsumer."):
            created[name] = created.get(name, 0) + 1
        return real_create_task(coro, **kwargs)

    monkeypatch.setattr(loop, "create_task", counting)
    store = MemoryQueueStore()
    jobs = 200
    for n in range(jobs):
        await store.push(Q, Job.new(Q, "f", n))
    done = asyncio.Event()
    count = 0

    async def instant(job: Job) -> None:
        nonlocal count
        count += 1
        if count == jobs:
            done.set()

    consumer: QueueConsumer = consumer_on(store, instant, concurrency=50)
    consumer.start()
    await asyncio.wait_for(done.wait(), WAIT)
    await consumer.stop()  # not in a task of its own (bounded by stop_ms)
    assert await store.counts(Q) == QueueCounts(0, 0, 0, 0)
    assert created == {"QueueConsumer._loop": 1, "QueueConsumer._work": jobs}


async def test_a_handler_raising_cancelled_error_of_its_own_spends_its_attempts_and_goes_to_the_dlq(
    stores: Callable[[], QueueStore],
) -> None:
    """Not a stop: counted as a failed attempt. Given back as at a stop, it ran again at once for ever."""
    store = Gated(stores())
    store.gate("dead").set()  # open: only to be told the letter is stored
    runs: list[int] = []
    too_many = asyncio.Event()

    async def cancelled_inside(job: Job) -> None:
        runs.append(job.attempts)
        if len(runs) > 2:
            too_many.set()
        raise asyncio.CancelledError

    await store.push(Q, Job.new(Q, "f", 1))
    consumer = consumer_on(store, cancelled_inside, max_retries=2, backoff_ms=0)
    consumer.start()
    dead = asyncio.create_task(store.finished["dead"].wait())
    spinning = asyncio.create_task(too_many.wait())
    await asyncio.wait({dead, spinning}, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
    await consumer.stop()
    dead.cancel()
    spinning.cancel()
    assert runs == [0, 1]
    assert await stores().counts(Q) == QueueCounts(0, 0, 0, 1)


async def test_a_stop_cancelled_from_outside_as_it_begins_still_gives_back_the_running_jobs(
    stores: Callable[[], QueueStore],
) -> None:
    started = asyncio.Semaphore(0)

    async def stuck(job: Job) -> None:
        started.release()
        await asyncio.Event().wait()

    for n in range(2):
        await stores().push(Q, Job.new(Q, "f", n))
    consumer = consumer_on(stores(), stuck, concurrency=2)
    consumer.start()
    for _ in range(2):
        await asyncio.wait_for(started.acquire(), WAIT)
    stopping = await stop_once_the_loop_ended(consumer)  # begun: it waits for the jobs
    stopping.cancel()
    left = queue_tasks()  # none with the in-memory store: its releases took no turn
    if left:
        await asyncio.wait(left, timeout=WAIT)
    assert queue_tasks() == set()
    assert await stores().counts(Q) == QueueCounts(2, 0, 0, 0)
