"""A ``queue`` trigger registered on a front engine whose queue module is a Bridge runs on the back with the
subscriber's ``queue_config``: before, only the topic went, so the back's defaults applied (a handler asked to run
once, one job at a time, ran three times per job, four jobs at once)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec

QUEUE = "modules::queue::QueueModule"


def _engine(modules: list[ModuleSpec]) -> Engine:
    return Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=modules))


async def test_a_front_queue_trigger_runs_on_the_back_with_its_queue_config() -> None:
    async with _engine([ModuleSpec(QUEUE, {})]) as back:
        bridged = ModuleSpec(QUEUE, {"adapter": {"class": "modules::queue::adapters::Bridge",
                                                 "config": {"bridge_url": back.url}}})
        async with _engine([bridged]) as front, ModuleWorker(front.url) as worker:
            runs: list[Any] = []
            running, peak = 0, 0
            done = asyncio.Event()

            async def job(data: Any) -> Any:
                nonlocal running, peak
                running += 1
                peak = max(peak, running)
                runs.append(data)
                try:
                    await asyncio.sleep(0.05)  # (long enough for a second job to overlap were concurrency > 1)
                finally:
                    running -= 1
                if len(runs) == 4:
                    done.set()
                raise RuntimeError("always fails")

            await worker.function("front.job", job)
            config = {"topic": "jobs", "queue_config": {"maxRetries": 1, "concurrency": 1, "backoffDelayMs": 10}}
            await worker.trigger("t1", "queue", "front.job", config)
            deadline = time.monotonic() + 10
            while not any(t.trigger_type == "queue" and (t.config or {}).get("topic") == "jobs"
                          for t in back.registry.triggers_of_type("queue")):
                assert time.monotonic() < deadline, "the front's queue trigger never reached the back"
                await asyncio.sleep(0.02)
            [mirrored] = [t for t in back.registry.triggers_of_type("queue") if (t.config or {}).get("topic") == "jobs"]
            assert mirrored.config["queue_config"] == config["queue_config"]
            for n in range(4):
                assert await worker.result("enqueue", {"topic": "jobs", "data": {"n": n}}) is None
            await asyncio.wait_for(done.wait(), 15)
            assert peak == 1, f"{peak} jobs ran at once (concurrency 1)"
            # every job dead-lettered on the back after its one attempt (the back's default gave three)
            async with ModuleWorker(back.url) as observer:
                deadline = time.monotonic() + 10
                while len((await observer.result("engine::queue::dlq_messages", {"topic": "jobs"}))["messages"]) < 4:
                    assert time.monotonic() < deadline, "the jobs never reached the back's dead letters"
                    await asyncio.sleep(0.02)
            assert sorted(r["n"] for r in runs) == [0, 1, 2, 3], runs
