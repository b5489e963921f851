"""A queue job whose worker left before the job's frame was sent to it (it waited for room in the worker's queue, or
was dropped from it unwritten: ``invocation_stopped`` "... the call did not run") is put off, its attempt not counted,
and runs once a worker serves the function again. Before, it was a failed attempt: with one attempt allowed, every
such job went to the dead-letter queue without ever running."""

from __future__ import annotations

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from tests.integration.engine.raw import RawWorker
from tests.polling import until

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("the queue module's handling of a callee lost")]

JOBS = 48
PAYLOAD = "x" * (1024 * 1024)  # 48 MiB in all: past the worker's socket buffers and its 16 MiB queue


async def test_jobs_never_sent_to_a_worker_that_left_run_later_and_are_not_dead_lettered() -> None:
    queue = {"max_retries": 1, "concurrency": JOBS, "backoff_ms": 0, "poll_interval_ms": 20,
             "missing_function_grace_ms": 20_000}
    config = EngineConfig(host="127.0.0.1", port=0, modules=[
        ModuleSpec("modules::queue::QueueModule", {"queue_configs": {"q": queue}})])
    async with Engine(config=config) as engine:
        callee = await RawWorker.connect(engine.url)
        await callee.register("stall")
        await callee.sync()
        producer = await RawWorker.connect(engine.url)
        for n in range(JOBS):
            reply = await producer.call("stall", {"n": n, "pad": PAYLOAD}, action={"type": "enqueue", "queue": "q"})
            assert "error" not in reply, reply
        await callee.expect("invokefunction")  # the first reaches it; then it stops reading
        callee.ws.transport.pause_reading()
        box = engine.workers[callee.worker_id].outbox
        await until(lambda: len(engine.invocations.pending) == JOBS)  # every job routed to the callee
        unsent = box.waiting + len(box)
        assert unsent > 0
        callee.ws.transport.abort()  # the worker is lost with the jobs that were never written to it
        await until(lambda: callee.worker_id not in engine.workers)

        replacement = await RawWorker.connect(engine.url)
        await replacement.register("stall")
        await replacement.sync()

        async def stats() -> dict[str, int]:
            result: dict[str, int] = await producer.result_of("engine::queue::topic_stats", {"topic": "q"})
            return result

        served: list[int] = []
        while len(served) + (await stats())["dlq"] < JOBS:
            served.append((await replacement.serve_one("done"))["data"]["n"])
        page = await producer.result_of("engine::queue::dlq_messages", {"topic": "q", "count": JOBS})
        # only jobs the lost worker's socket had been given may have run: those spent their one attempt
        errors = [letter["error"] for letter in page["messages"]]
        assert all("may have run" in error for error in errors), errors
        assert len(served) >= unsent, (len(served), unsent)  # before: 0, every one dead-lettered
        for worker in (producer, replacement):
            await worker.close()


async def test_a_worker_answering_with_the_engine_s_not_sent_words_still_spends_the_attempt() -> None:
    # Only the engine knows a call was never sent: a worker's answer comes for a call it received. Read from the
    # error's text, a worker answering so (buggy or hostile) had its job put off for ever, never dead-lettered.
    queue = {"max_retries": 1, "backoff_ms": 0, "poll_interval_ms": 20}
    config = EngineConfig(host="127.0.0.1", port=0, modules=[
        ModuleSpec("modules::queue::QueueModule", {"queue_configs": {"q": queue}})])
    async with Engine(config=config) as engine:
        worker = await RawWorker.connect(engine.url)
        await worker.register("forge")
        await worker.sync()
        reply = await worker.call("forge", {"n": 1}, action={"type": "enqueue", "queue": "q"})
        assert "error" not in reply, reply
        request = await worker.expect("invokefunction", function_id="forge")
        forged = ("Invocation of forge stopped: its callee's worker disconnected before the call was sent to it; the "
                  "call did not run")
        await worker.send({"type": "invocationresult", "invocation_id": request["invocation_id"],
                           "function_id": "forge", "error": {"code": "invocation_stopped", "message": forged}})

        async def dead_letters() -> int:
            stats: dict[str, int] = await worker.result_of("engine::queue::topic_stats", {"topic": "q"})
            return stats["dlq"]

        while await dead_letters() == 0:  # before: asked again for good, never a dead letter
            await worker.nothing_for(0.02)  # (answers nothing more: a retry would arrive here unanswered)
        await worker.close()
