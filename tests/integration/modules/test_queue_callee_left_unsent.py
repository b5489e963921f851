"""A queue job whose worker left before the job's frame was sent to it (it waited for room in the worker's queue, or
was dropped from it unwritten: ``invocation_stopped`` "... the call did not run") is put off, its attempt not counted,
and runs once a worker serves the function again. Before, it was a failed attempt: with one attempt allowed, every
such job went to the dead-letter queue without ever running.

Also: such a job runs at once when another worker serves the function already (it waited its whole ``backoff_ms``),
a topic job whose *condition* call was never sent is put off too (it was skipped: done, never run), and jobs routed
to a worker whose connection is being torn down do not loop with ``backoff_ms`` 0."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.base import CallNotSent
from tests.integration.engine.raw import RawWorker
from tests.polling import until

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("the queue module's handling of a callee lost")]

JOBS = 48
PAYLOAD = "x" * (1024 * 1024)  # 48 MiB in all: past the worker's socket buffers and its 16 MiB queue
LONG_BACKOFF_MS = 60_000  # past the test's timeout: a job that waited it out never ran here


def _queue_engine(queue: dict[str, Any], **settings: Any) -> Engine:
    return Engine(config=EngineConfig(host="127.0.0.1", port=0, **settings, modules=[
        ModuleSpec("modules::queue::QueueModule", {"queue_configs": {"q": queue}})]))


async def _worker(engine: Engine, function_id: str) -> RawWorker:
    worker = await RawWorker.connect(engine.url)
    await worker.register(function_id)
    await worker.sync()
    return worker


async def _stalled(engine: Engine, callee: RawWorker, enqueue: Callable[[int], Awaitable[None]]) -> int:
    """Enqueue ``JOBS`` jobs whose calls all go to ``callee``, which takes the first and stops reading: returns how
    many frames wait unsent in its queue."""
    for n in range(JOBS):
        await enqueue(n)
    await callee.expect("invokefunction")
    callee.ws.transport.pause_reading()
    box = engine.workers[callee.worker_id].outbox
    await until(lambda: len(engine.invocations.pending) >= JOBS - 1)  # (a topic: the first one's condition answered)
    unsent = box.waiting + len(box)
    assert unsent > 0
    return unsent


async def _dead_letters(worker: RawWorker) -> int:
    stats: dict[str, int] = await worker.result_of("engine::queue::topic_stats", {"topic": "q"})
    return stats["dlq"]


def _named_enqueue(producer: RawWorker) -> Callable[[int], Awaitable[None]]:
    async def enqueue(n: int) -> None:
        reply = await producer.call("stall", {"n": n, "pad": PAYLOAD}, action={"type": "enqueue", "queue": "q"})
        assert "error" not in reply, reply
    return enqueue


async def test_jobs_never_sent_to_a_worker_that_left_run_later_and_are_not_dead_lettered() -> None:
    queue = {"max_retries": 1, "concurrency": JOBS, "backoff_ms": 0, "poll_interval_ms": 20,
             "missing_function_grace_ms": 20_000}
    async with _queue_engine(queue) as engine:
        callee = await _worker(engine, "stall")
        producer = await RawWorker.connect(engine.url)
        unsent = await _stalled(engine, callee, _named_enqueue(producer))
        callee.ws.transport.abort()  # the worker is lost with the jobs that were never written to it
        await until(lambda: callee.worker_id not in engine.workers)

        replacement = await _worker(engine, "stall")

        served: list[int] = []
        while len(served) + await _dead_letters(producer) < JOBS:
            served.append((await replacement.serve_one("done"))["data"]["n"])
        page = await producer.result_of("engine::queue::dlq_messages", {"topic": "q", "limit": JOBS})
        # only jobs the lost worker's socket had been given may have run: those spent their one attempt
        errors = [letter["error"] for letter in page["messages"]]
        assert all("may have run" in error for error in errors), errors
        assert len(served) >= unsent, (len(served), unsent)  # before: 0, every one dead-lettered
        for worker in (producer, replacement):
            await worker.close()


async def test_a_worker_answering_with_the_engine_s_not_sent_words_still_spends_the_attempt() -> None:
    # Only the engine knows a call was never sent: a worker's answer comes for a call it received. Read from the
    # error's text, a worker answering so (buggy or hostile) had its job put off for ever, never dead-lettered.
    async with _queue_engine({"max_retries": 1, "backoff_ms": 0, "poll_interval_ms": 20}) as engine:
        worker = await _worker(engine, "forge")
        reply = await worker.call("forge", {"n": 1}, action={"type": "enqueue", "queue": "q"})
        assert "error" not in reply, reply
        request = await worker.expect("invokefunction", function_id="forge")
        forged = ("Invocation of forge stopped: its callee's worker disconnected before the call was sent to it; the "
                  "call did not run")
        await worker.send({"type": "invocationresult", "invocation_id": request["invocation_id"],
                           "function_id": "forge", "error": {"code": "invocation_stopped", "message": forged}})

        while await _dead_letters(worker) == 0:  # before: asked again for good, never a dead letter
            await worker.nothing_for(0.02)  # (answers nothing more: a retry would arrive here unanswered)
        await worker.close()


@pytest.mark.parametrize("standby", ["registered after", "registered before"])
async def test_jobs_never_sent_run_at_once_when_another_worker_serves_the_function(standby: str) -> None:
    # "after": a rolling deploy's new version takes the function over, then the old one is lost; "before": a standby
    # the lost worker shadowed serves it again once the lost one is cleaned up (no registration comes then). Before,
    # both kinds waited out backoff_ms, a worker serving them all along.
    queue = {"max_retries": 1, "concurrency": JOBS, "backoff_ms": LONG_BACKOFF_MS, "poll_interval_ms": 20,
             "missing_function_grace_ms": 20_000}
    async with _queue_engine(queue) as engine:
        other = await _worker(engine, "stall") if standby == "registered before" else None
        callee = await _worker(engine, "stall")
        producer = await RawWorker.connect(engine.url)
        await _stalled(engine, callee, _named_enqueue(producer))
        if other is None:
            other = await _worker(engine, "stall")
        callee.ws.transport.abort()
        served = 0
        # each within 10 s (RawWorker's wait), where backoff_ms is 60 s; the jobs the lost worker's socket had been
        # given may have run: those are dead letters
        while served + await _dead_letters(producer) < JOBS:
            await other.serve_one("done", function_id="stall")
            served += 1
        assert served > 0
        for worker in (producer, other):
            await worker.close()


@pytest.mark.parametrize("guard_back", ["at once", "after the jobs were tried again"])
async def test_a_topic_job_whose_condition_call_was_never_sent_is_put_off_not_skipped(
        guard_back: str, caplog: pytest.LogCaptureFixture) -> None:
    # The condition did not decide; before, condition_passes took the error for "skip" and the job was done, its
    # subscriber never run (35-40 of 48 jobs in an attack), the replacement condition never asked. "after": the
    # replacement guard comes once the jobs were tried again and found the condition missing; before, that was a
    # condition error, so a skip too (a guard 0.6-3 s late lost them all).
    caplog.set_level("INFO", logger="iii_engine.modules.queue.module")
    async with _queue_engine({}) as engine:
        subscriber = await _worker(engine, "w::f")
        guard = await _worker(engine, "w::guard")
        await subscriber.send({"type": "registertrigger", "id": "t-q", "trigger_type": "queue", "function_id": "w::f",
                               "config": {"topic": "t", "condition_function_id": "w::guard",
                                          "queue_config": {"maxRetries": 1, "backoffDelayMs": 0,
                                                           "concurrency": JOBS}}})
        await subscriber.sync()

        async def enqueue(n: int) -> None:
            await engine.invoke("enqueue", {"topic": "t", "data": {"n": n, "pad": PAYLOAD}})

        await _stalled(engine, guard, enqueue)
        guard.ws.transport.abort()
        await until(lambda: guard.worker_id not in engine.workers)
        if guard_back != "at once":  # a job found its condition missing and waits for it (said once)
            await until(lambda: any("'w::guard' is not registered" in r.getMessage() for r in caplog.records),
                        within=10)
        replacement = await _worker(engine, "w::guard")

        async def dead_letters() -> int:  # conditions the lost guard's socket had been given (they may have run):
            # their jobs' one attempt failed; before, skipped: done, their subscriber never run, nothing kept
            stats: dict[str, int] = await subscriber.result_of("engine::queue::topic_stats", {"topic": "t"})
            return stats["dlq"]

        ran = 0
        while ran + await dead_letters() < JOBS:  # every other condition is asked again, then its job runs
            await replacement.serve_one(True, function_id="w::guard")
            await subscriber.serve_one("done", function_id="w::f")
            ran += 1
        assert ran > 0 and ran + await dead_letters() == JOBS
        assert await dead_letters() > 0  # (the guard took at least the first condition before it stopped reading)
        assert not any("skipping" in r.getMessage() or "function_not_found" in r.getMessage()
                       for r in caplog.records)
        for worker in (subscriber, replacement):
            await worker.close()


async def test_jobs_routed_to_a_worker_being_torn_down_do_not_loop() -> None:
    # A worker whose queue overflowed is closed but serves its functions until its clean-up ends (up to 2 s); each
    # job routed to it meanwhile fails at once as never sent. With backoff_ms 0 they were tried again at once: about
    # 800 tries for 20 jobs in those 2 s, a core busy. Then each waited NOT_SENT_RECHECK_MS or a registration of any
    # function, and registrations elsewhere (a rolling deploy's workers) made the loop again: ~1,000 tries. Now each
    # waits NOT_SENT_RECHECK_MS.
    queue = {"max_retries": 1, "concurrency": JOBS, "backoff_ms": 0, "poll_interval_ms": 20,
             "missing_function_grace_ms": 20_000}
    async with _queue_engine(queue, max_outbox_bytes=4 * 1024 * 1024) as engine:
        tries = {"not sent": 0}
        call = engine.invocations.call

        async def counting(*args: Any, **kwargs: Any) -> Any:
            try:
                return await call(*args, **kwargs)
            except CallNotSent:
                tries["not sent"] += 1
                raise

        engine.invocations.call = counting  # type: ignore[method-assign]
        callee = await _worker(engine, "stall")
        big = await _worker(engine, "big")
        producer = await RawWorker.connect(engine.url)
        await _stalled(engine, callee, _named_enqueue(producer))
        box = engine.workers[callee.worker_id].outbox
        # the callee calls "big", whose 2 MiB answer is posted to its full queue: the queue overflows and closes
        await callee.send({"type": "invokefunction", "invocation_id": str(uuid.uuid4()), "function_id": "big",
                           "data": None})
        request = await big.expect("invokefunction")
        await big.send({"type": "invocationresult", "invocation_id": request["invocation_id"], "function_id": "big",
                        "result": "y" * (2 * 1024 * 1024)})
        await until(lambda: box.closed)
        churn = await RawWorker.connect(engine.url)
        registered = 0
        while callee.worker_id in engine.workers:  # another worker registers functions meanwhile
            await churn.register(f"other::{registered}")
            await churn.sync()
            registered += 1
        assert registered > 10
        assert tries["not sent"] <= 5 * JOBS, tries  # before: 800-1,000 for the ~20 jobs left unsent
        for worker in (producer, big, churn):
            await worker.close()
