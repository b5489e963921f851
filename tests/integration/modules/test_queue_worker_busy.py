"""A queue job whose worker refused it for being busy (our SDK's ``worker_busy``, past its ``max_invocations``: the
handler never ran) is put off and tried again, its attempt not counted. Before, the refusal was a failed attempt, so
a busy spell dead-lettered jobs that never ran: here, with one attempt allowed, 3 of 4. A real engine, a real SDK
worker, named queues (in memory and in Redis) and topics."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from typing import Any

import pytest
from module_worker import ModuleWorker
from redis.asyncio import Redis

from iii import InitOptions, register_worker
from iii.protocol.client import worker_busy
from iii_engine import Engine, EngineConfig, ModuleSpec
from tests.integration.engine.raw import RawWorker
from tests.services import require_redis

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("the queue module's handling of worker_busy")]

JOBS = 4


def _engine_with_queue(queue: dict[str, Any]) -> Engine:
    """An engine with named queue ``q`` of settings ``queue``."""
    settings = {"queue_configs": {"q": queue}}
    return Engine(config=EngineConfig(host="127.0.0.1", port=0,
                                      modules=[ModuleSpec("modules::queue::QueueModule", settings)]))


async def _serving(engine: Engine, function_id: str) -> RawWorker:
    """A raw worker of ``engine`` that has registered ``function_id``."""
    worker = await RawWorker.connect(engine.url)
    await worker.register(function_id)
    await worker.sync()
    return worker


async def _stats(worker: ModuleWorker, queue: str) -> dict[str, int]:
    stats: dict[str, int] = await worker.result("engine::queue::topic_stats", {"topic": queue})
    return stats


@pytest.mark.parametrize("kind", ["named", "topic", pytest.param("named on Redis", marks=pytest.mark.redis)])
async def test_jobs_a_busy_worker_refused_run_later_and_are_not_dead_lettered(
        kind: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="iii_engine.modules.queue.module")
    queue = {"max_retries": 1, "concurrency": JOBS, "backoff_ms": 0, "poll_interval_ms": 20}
    settings: dict[str, Any] = {"queue_configs": {"q": queue}} if kind != "topic" else {}
    prefix = f"busy-{uuid.uuid4().hex[:8]}:"
    if kind == "named on Redis":
        settings["adapter"] = {"class": "modules::queue::RedisAdapter",
                               "config": {"redis_url": require_redis(), "key_prefix": prefix}}
    config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec("modules::queue::QueueModule", settings)])
    function_id = f"busy::{uuid.uuid4().hex[:8]}"
    release, first = threading.Event(), threading.Event()
    ran: list[int] = []

    def handler(data: Any) -> None:
        ran.append(data["n"])
        first.set()
        assert release.wait(20)  # holds the worker's only slot: the other jobs are refused meanwhile

    async with Engine(config=config) as engine, ModuleWorker(engine.url) as producer:
        # the SDK's sync calls wait for its connection, which this loop (the engine's) serves: off the loop
        worker = await asyncio.to_thread(register_worker, engine.url, InitOptions(max_invocations=1))
        try:
            await asyncio.to_thread(worker.register_function, function_id, handler)
            if kind == "topic":
                limits = {"maxRetries": 1, "concurrency": JOBS, "backoffDelayMs": 0}
                subscription = {"topic": "q", "queue_config": limits}
                await asyncio.to_thread(worker.register_trigger,
                                        {"type": "queue", "function_id": function_id, "config": subscription})
            while not engine.has_function(function_id) or (  # noqa: ASYNC110 - no event tells a registration
                    kind == "topic" and not await producer.result("engine::queue::list_topics")):
                await asyncio.sleep(0.01)
            for n in range(JOBS):
                if kind != "topic":
                    reply = await producer.call(function_id, {"n": n}, action={"type": "enqueue", "queue": "q"})
                else:
                    reply = await producer.call("enqueue", {"topic": "q", "data": {"n": n}})
                assert "error" not in reply, reply
            assert await asyncio.to_thread(first.wait, 10)

            async def refused() -> dict[str, int]:
                # the other jobs were refused: put off now (dead letters before), none waiting to be tried
                while (stats := await _stats(producer, "q"))["delayed"] + stats["dlq"] < JOBS - 1:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                return stats

            stats = await asyncio.wait_for(refused(), 10)
            assert stats["dlq"] == 0, f"{stats['dlq']} of {JOBS - 1} jobs the busy worker never ran were dead-lettered"
            release.set()

            async def done() -> dict[str, int]:
                while len(ran) < JOBS:  # noqa: ASYNC110 - the handler's runs tell nothing to the loop
                    await asyncio.sleep(0.01)
                return await _stats(producer, "q")

            stats = await asyncio.wait_for(done(), 15)
            assert sorted(ran) == list(range(JOBS)) and stats["dlq"] == 0, (ran, stats)
        finally:
            release.set()
            await asyncio.to_thread(worker.shutdown)
            if kind == "named on Redis":
                async with Redis.from_url(require_redis()) as admin:
                    if keys := [key async for key in admin.scan_iter(match=f"{prefix}*")]:
                        await admin.delete(*keys)
    warnings = [r.getMessage() for r in caplog.records if "worker was busy" in r.getMessage()]
    assert warnings and function_id in warnings[0], warnings


async def test_a_topic_job_whose_condition_was_refused_busy_is_put_off_not_skipped() -> None:
    # Before, the busy refusal counted as the condition's "false": the job was done, its handler never run.
    config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec("modules::queue::QueueModule", {})])
    async with Engine(config=config) as engine:
        worker = await RawWorker.connect(engine.url)
        for function_id in ("w::f", "w::guard"):
            await worker.register(function_id)
        await worker.send({"type": "registertrigger", "id": "t-q", "trigger_type": "queue", "function_id": "w::f",
                           "config": {"topic": "q", "condition_function_id": "w::guard",
                                      "queue_config": {"maxRetries": 1, "backoffDelayMs": 0}}})
        await worker.sync()
        await engine.invoke("enqueue", {"topic": "q", "data": {"n": 1}})
        guard = await worker.expect("invokefunction", function_id="w::guard")
        await worker.send({"type": "invocationresult", "invocation_id": guard["invocation_id"],
                           "function_id": "w::guard", "error": worker_busy("w::guard", 1)})
        await worker.serve_one(True, function_id="w::guard")  # asked again after the put-off
        served = await worker.serve_one("done", function_id="w::f")
        assert served["data"] == {"n": 1}
        await worker.close()


async def test_a_worker_busy_past_the_grace_ends_in_the_dead_letter_queue_refused_ever_less_often() -> None:
    # A worker that answers worker_busy to everything (stuck for good, or hostile): before, its jobs came back every
    # max(backoff_ms, 100 ms) for ever (2 x 10,000 jobs kept an engine at 81-89 % of a core, never ending). Now the
    # waits grow with the spell, and past missing_function_grace_ms a refusal is a failed attempt.
    # 30 jobs at concurrency 10: refusals overlap, which the first take of 'progress' counted (it never ended)
    grace_ms, jobs = 3000, 30
    queue = {"missing_function_grace_ms": grace_ms, "max_retries": 1, "backoff_ms": 0, "poll_interval_ms": 20}
    async with _engine_with_queue(queue) as engine, ModuleWorker(engine.url) as producer:
        worker = await _serving(engine, "w::stuck")
        refused = 0

        answers: set[asyncio.Task[None]] = set()

        async def refuse_soon(frame: dict[str, Any]) -> None:
            await asyncio.sleep(0.1)  # as a loaded worker answers: refusals of the queue's 10 calls overlap
            await worker.send({"type": "invocationresult", "invocation_id": frame["invocation_id"],
                               "function_id": "w::stuck", "error": worker_busy("w::stuck", 1)})

        async def refuse_everything() -> None:
            nonlocal refused
            while True:
                frame = await worker.expect("invokefunction", wait=30)
                refused += 1
                answer = asyncio.create_task(refuse_soon(frame))
                answers.add(answer)
                answer.add_done_callback(answers.discard)

        refuser = asyncio.create_task(refuse_everything())
        try:
            began = asyncio.get_running_loop().time()
            for n in range(jobs):
                reply = await producer.call("w::stuck", {"n": n}, action={"type": "enqueue", "queue": "q"})
                assert "error" not in reply, reply

            async def dead_letters() -> None:
                while (await _stats(producer, "q"))["dlq"] < jobs:  # noqa: ASYNC110 - no event tells a dead letter
                    await asyncio.sleep(0.05)

            await asyncio.wait_for(dead_letters(), 15)  # before: never
            took = asyncio.get_running_loop().time() - began
        finally:
            refuser.cancel()
        assert took >= grace_ms / 1000, f"dead-lettered after {took:.2f} s, within the {grace_ms} ms grace"
        # every 100 ms for 3 s would be about 30 refusals a job; growing waits make about a dozen
        assert refused <= jobs * 20, f"{refused} refusals for {jobs} jobs over {took:.1f} s"
        page: dict[str, Any] = await producer.result("engine::queue::dlq_messages", {"topic": "q"})
        assert all(m["error"].startswith("worker_busy") for m in page["messages"]), page
        await worker.close()



async def test_jobs_refused_while_another_runs_longer_than_the_grace_are_not_dead_lettered() -> None:
    # The worker's one slot runs job 0 for longer than the grace; job 1 is refused meanwhile. The worker is not
    # stuck (a job of the function runs): before, job 1 was dead-lettered at the grace (the helper's case: 9
    # refusals, dead letter at 3 s while the worker ran jobs all along).
    grace_ms = 1000
    queue = {"missing_function_grace_ms": grace_ms, "max_retries": 1, "backoff_ms": 0, "poll_interval_ms": 20,
             "concurrency": 2}
    async with _engine_with_queue(queue) as engine, ModuleWorker(engine.url) as producer:
        worker = await _serving(engine, "w::long")
        for n in range(2):
            reply = await producer.call("w::long", {"n": n}, action={"type": "enqueue", "queue": "q"})
            assert "error" not in reply, reply
        loop = asyncio.get_running_loop()
        held = await worker.expect("invokefunction", function_id="w::long")
        until = loop.time() + grace_ms / 1000 * 2
        refused = 0
        while loop.time() < until:  # job 0 runs for two graces; every other call is refused meanwhile
            try:
                frame = await worker.expect("invokefunction", wait=max(until - loop.time(), 0.01))
            except TimeoutError:
                break
            refused += 1
            await worker.send({"type": "invocationresult", "invocation_id": frame["invocation_id"],
                               "function_id": "w::long", "error": worker_busy("w::long", 1)})
        assert refused >= 2, refused  # job 1 was refused past the grace
        await worker.send({"type": "invocationresult", "invocation_id": held["invocation_id"],
                           "function_id": "w::long", "result": "done"})
        served = await worker.serve_one("done", function_id="w::long")
        assert served["data"] != held["data"]
        assert (await _stats(producer, "q"))["dlq"] == 0
        await worker.close()
