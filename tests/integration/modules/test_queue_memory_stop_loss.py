"""An in-memory queue loses its jobs when the engine stops, and the stop says how many, in one warning.

Before: a SIGTERM with 199 accepted jobs waiting (concurrency 1, a 0.5 s handler, 200 enqueues each given a
``messageReceiptId``) exited 0 and no log line mentioned them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec

pytestmark = pytest.mark.our_engine("stops the queue module's in-memory store with jobs in it")

WAIT = 10.0
WAITING = 5  # enqueued behind the one running job (concurrency 1); the running one is given back at the stop


async def stats(worker: ModuleWorker, queue: str) -> dict[str, Any]:
    result: dict[str, Any] = await worker.result("engine::queue::topic_stats", {"topic": queue})
    return result


async def test_the_stop_names_the_jobs_an_in_memory_queue_discards(caplog: pytest.LogCaptureFixture) -> None:
    settings = {"queue_configs": {
        "q": {"concurrency": 1},
        "later": {"max_retries": 5, "backoff_ms": 600_000},  # its failed job waits 10 min for its retry
        "dead": {"max_retries": 1},
    }}
    caplog.set_level(logging.INFO, logger="iii_engine.modules.queue.module")
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[
        ModuleSpec("modules::queue::QueueModule", settings)]))
    await engine.start()
    try:
        async with ModuleWorker(engine.url) as worker:
            started = asyncio.Event()
            failed: asyncio.Queue[str] = asyncio.Queue()

            async def hold(data: Any) -> None:
                started.set()
                await asyncio.Event().wait()  # until the engine stops

            async def fail(data: Any) -> None:
                failed.put_nowait(data["queue"])
                raise RuntimeError("no")

            await worker.function("hold", hold)
            await worker.function("fail", fail)
            assert "result" in await worker.call("hold", {"n": 0}, action={"type": "enqueue", "queue": "q"})
            await asyncio.wait_for(started.wait(), WAIT)
            for n in range(1, WAITING + 1):
                assert "result" in await worker.call("hold", {"n": n}, action={"type": "enqueue", "queue": "q"})
            for queue in ("later", "dead"):
                assert "result" in await worker.call("fail", {"queue": queue}, action={"type": "enqueue",
                                                                                       "queue": queue})
                assert await asyncio.wait_for(failed.get(), WAIT) == queue
            # The retry and the DLQ move follow the failed result with no event a client can await: poll them.
            while (await stats(worker, "later"))["delayed"] != 1 or (await stats(worker, "dead"))["dlq"] != 1:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            assert (await stats(worker, "q"))["waiting"] == WAITING
            await engine.stop()
    finally:
        await engine.stop()
    told = [r for r in caplog.records if "discards" in r.getMessage()]
    assert len(told) == 1, [r.getMessage() for r in caplog.records]
    assert told[0].levelno == logging.WARNING
    line = told[0].getMessage()
    assert (f"discards {WAITING + 3} job(s) at this stop: {WAITING + 1} waiting, 1 delayed, 0 in flight (leased), "
            "1 dead letter(s), in __fn_queue::q (6), ") in line, line
    assert "__fn_queue::later (1)" in line and "__fn_queue::dead (1)" in line, line


async def test_an_empty_in_memory_queue_stops_without_the_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="iii_engine.modules.queue.module")
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[
            ModuleSpec("modules::queue::QueueModule", {"queue_configs": {"q": {}}})])) as engine:
        async with ModuleWorker(engine.url) as worker:
            ran = asyncio.Event()

            async def work(data: Any) -> None:
                ran.set()

            await worker.function("work", work)
            assert "result" in await worker.call("work", {}, action={"type": "enqueue", "queue": "q"})
            await asyncio.wait_for(ran.wait(), WAIT)
            while (await stats(worker, "q"))["waiting"] + (await stats(worker, "q"))["active"]:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    assert not [r for r in caplog.records if "discards" in r.getMessage()]
