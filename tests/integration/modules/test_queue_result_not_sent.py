"""A queue job whose handler ran but whose result could not be sent (our SDK's ``result_not_sent``: a result with no
JSON form, or over the engine's message size limit) is done: before, the answer was ``invocation_failed``, so the
job ran again up to ``max_retries`` and ended in the dead-letter queue, its work done each time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii import InitOptions, register_worker
from iii_engine import Engine, EngineConfig, ModuleSpec
from tests.integration.engine.raw import RawWorker

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("the queue module's handling of result_not_sent")]

QUEUE = {"max_retries": 3, "concurrency": 1, "backoff_ms": 0, "poll_interval_ms": 20}


@asynccontextmanager
async def _serving(engine: Engine, function_id: str, handler: Callable[[Any], Any]) -> AsyncIterator[None]:
    """An SDK worker of ``engine`` serving ``function_id`` (registered) while the block runs."""
    worker = await asyncio.to_thread(register_worker, engine.url, InitOptions(worker_name=function_id))
    try:
        await asyncio.to_thread(worker.register_function, function_id, handler)
        while not engine.has_function(function_id):  # noqa: ASYNC110 - no event tells a registration
            await asyncio.sleep(0.01)
        yield
    finally:
        await asyncio.to_thread(worker.shutdown)


def _engine() -> Engine:
    settings = {"queue_configs": {"q": QUEUE}}
    return Engine(config=EngineConfig(host="127.0.0.1", port=0,
                                      modules=[ModuleSpec("modules::queue::QueueModule", settings)]))


async def test_a_job_whose_result_was_not_sent_is_done_not_run_again(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="iii_engine.modules.queue.module")
    async with _engine() as engine, ModuleWorker(engine.url) as producer:
        worker = await RawWorker.connect(engine.url)
        await worker.register("jobs::run")
        await worker.sync()
        for n in (1, 2):
            reply = await producer.call("jobs::run", {"n": n}, action={"type": "enqueue", "queue": "q"})
            assert "error" not in reply, reply
        first = await worker.expect("invokefunction", function_id="jobs::run")
        assert first["data"] == {"n": 1}
        await worker.send({"type": "invocationresult", "invocation_id": first["invocation_id"],
                           "function_id": "jobs::run",
                           "error": {"code": "result_not_sent", "message": "result of jobs::run is not JSON"}})
        second = await worker.expect("invokefunction", function_id="jobs::run")
        assert second["data"] == {"n": 2}, "the job whose result was not sent ran again"
        await worker.send({"type": "invocationresult", "invocation_id": second["invocation_id"],
                           "function_id": "jobs::run", "result": None})
        stats = await producer.result("engine::queue::topic_stats", {"topic": "q"})
        assert stats["dlq"] == 0, stats
    said = [r.getMessage() for r in caplog.records if "result could not be sent" in r.getMessage()]
    assert said and "jobs::run" in said[0], said


async def test_our_sdk_answers_an_unsendable_result_with_result_not_sent() -> None:
    runs: list[Any] = []

    def handler(data: Any) -> Any:
        runs.append(data)
        return {1, 2}  # a set: no JSON form

    async with _engine() as engine, ModuleWorker(engine.url) as producer, _serving(engine, "jobs::set", handler):
        answer = await producer.call("jobs::set", {"n": 1})
        assert answer["error"]["code"] == "result_not_sent", answer
        assert len(runs) == 1 and runs[0]["n"] == 1


@pytest.mark.parametrize("error", ["surrogate", "huge"])
async def test_a_handler_error_that_cannot_be_sent_as_it_is_stays_a_failure(error: str) -> None:
    """A handler's error with a lone surrogate in its text, or over the engine's message size limit, is sent as a
    failure (cut or escaped): it was answered ``result_not_sent``, and the queue counted the failed job done, never
    tried again nor dead-lettered (re-attack)."""
    runs: list[Any] = []

    def handler(data: Any) -> Any:
        runs.append(data)
        if error == "surrogate":
            raise RuntimeError("cannot open report-" + chr(0xDCFF) + ".csv")
        raise RuntimeError("x" * 200_000)

    queue = {**QUEUE, "max_retries": 2}
    config = EngineConfig(host="127.0.0.1", port=0, max_message_size=100_000,
                          modules=[ModuleSpec("modules::queue::QueueModule", {"queue_configs": {"q": queue}})])
    async with Engine(config=config) as engine, ModuleWorker(engine.url) as producer, \
            _serving(engine, "jobs::fail", handler):
        direct = await producer.call("jobs::fail", {"n": 0})
        assert direct["error"]["code"] == "invocation_failed", direct["error"]
        reply = await producer.call("jobs::fail", {"n": 1}, action={"type": "enqueue", "queue": "q"})
        assert "error" not in reply, reply

        async def dead_lettered() -> None:
            while (await producer.result("engine::queue::topic_stats", {"topic": "q"}))["dlq"] < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.02)

        await asyncio.wait_for(dead_lettered(), 15)
        assert len(runs) == 3, runs  # the direct call, then both attempts of the job
