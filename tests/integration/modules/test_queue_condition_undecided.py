"""A topic job whose condition call did not decide — it timed out (``invocation_timeout_ms``), or nobody served the
condition when its call was made — fails its attempt and is tried again, or kept as a dead letter. Before, such a
job was skipped: done, its subscriber never run, nothing kept (5 of 5 jobs in an attack with a slow condition
worker), where the README advises setting ``invocation_timeout_ms`` wherever a call may hang."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from tests.integration.engine.raw import RawWorker

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("the queue module's handling of a condition")]


async def _topic(engine: Engine, attempts: int) -> tuple[RawWorker, RawWorker]:
    """A subscriber of topic ``t`` (``w::f``) whose trigger asks condition ``w::guard``, and that condition's
    worker."""
    subscriber = await RawWorker.connect(engine.url)
    await subscriber.register("w::f")
    guard = await RawWorker.connect(engine.url)
    await guard.register("w::guard")
    await guard.sync()
    await subscriber.send({"type": "registertrigger", "id": "t-q", "trigger_type": "queue", "function_id": "w::f",
                           "config": {"topic": "t", "condition_function_id": "w::guard",
                                      "queue_config": {"maxRetries": attempts, "backoffDelayMs": 0}}})
    await subscriber.sync()
    return subscriber, guard


def _engine(**settings: Any) -> Engine:
    return Engine(config=EngineConfig(host="127.0.0.1", port=0, **settings,
                                      modules=[ModuleSpec("modules::queue::QueueModule", {})]))


async def test_a_condition_that_timed_out_is_asked_again_not_skipped() -> None:
    async with _engine(invocation_timeout_ms=300) as engine:
        subscriber, guard = await _topic(engine, attempts=3)
        await engine.invoke("enqueue", {"topic": "t", "data": {"n": 1}})
        await guard.expect("invokefunction", function_id="w::guard")  # never answered: it times out
        await guard.serve_one(True, function_id="w::guard")  # asked again (before: never; the job was done)
        job = await subscriber.serve_one("done", function_id="w::f")
        assert job["data"] == {"n": 1}
        for worker in (subscriber, guard):
            await worker.close()


async def test_a_condition_that_keeps_timing_out_leaves_a_dead_letter() -> None:
    async with _engine(invocation_timeout_ms=200) as engine:
        subscriber, guard = await _topic(engine, attempts=2)
        await engine.invoke("enqueue", {"topic": "t", "data": {"n": 2}})
        for _ in range(2):
            await guard.expect("invokefunction", function_id="w::guard")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10  # (no event tells the job's end: its second attempt times out after 0.2 s)
        while not (stats := await subscriber.result_of("engine::queue::topic_stats", {"topic": "t"}))["dlq"]:
            assert loop.time() < deadline, f"the job was dropped, not kept: {stats}"
            await asyncio.sleep(0.01)
        assert stats["dlq"] == 1
        for worker in (subscriber, guard):
            await worker.close()
