"""Attack on a topic's settings (F2): the first subscriber's ``queue_config`` shaped its topic unbounded. With
``concurrency`` 10**9 and a subscriber that never answers, 60,000 jobs were in flight to one worker at once (the
engine grew from 59 to 254 MB; 85 MB with concurrency 10), and a huge ``maxRetries`` kept a failing job cycling for
ever, never reaching the DLQ. The module's ``max_topic_concurrency`` (100), ``max_topic_retries`` (10) and
``max_topic_backoff_ms`` (60,000) now cap what a subscriber asks, logged once per topic."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.queue.module import QueueModule

pytestmark = pytest.mark.our_engine("configures the queue module's topic caps")

GREEDY = {"concurrency": 10**9, "maxRetries": 10**9, "backoffDelayMs": 10**12}


@asynccontextmanager
async def _engine(**settings: Any) -> AsyncIterator[tuple[Engine, QueueModule]]:
    """An engine whose queue module has the named queue 'orders' and ``settings``."""
    config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec("modules::queue::QueueModule", {
        "queue_configs": {"orders": {}}, **settings})])
    async with Engine(config=config) as running:
        module = running.module("queue")
        assert isinstance(module, QueueModule)
        yield running, module


async def never(data: Any) -> None:
    await asyncio.Event().wait()  # a handler that never answers: its topic's jobs stay


async def test_a_subscriber_asking_past_the_caps_gets_them_and_at_most_that_many_jobs_at_once(
        caplog: pytest.LogCaptureFixture) -> None:
    async with _engine() as (engine, module), ModuleWorker(engine.url) as producer, \
            ModuleWorker(engine.url) as worker:
        for n in range(150):  # waiting for a subscriber
            assert "error" not in await producer.call("enqueue", {"topic": "t", "data": {"n": n}})
        calls = 0
        hundredth = asyncio.Event()

        async def hold(data: Any) -> None:
            nonlocal calls
            calls += 1
            if calls == 100:
                hundredth.set()
            await never(data)

        await worker.function("t::hold", hold)
        with caplog.at_level(logging.WARNING, logger="iii_engine.modules.queue.module"):
            await worker.trigger("t-sub", "queue", "t::hold", {"topic": "t", "queue_config": GREEDY})
            settings = module._topics["t"].consumer.settings
            assert (settings.concurrency, settings.max_retries, settings.backoff_ms) == (100, 10, 60_000)
            await asyncio.wait_for(hundredth.wait(), 5)
            # the 100 running are claimed before they are sent: none is left to claim (before: all 150 were)
            assert (await producer.result("engine::queue::topic_stats", {"topic": "t"}))["waiting"] == 50
            assert module._topics["t"].consumer.running == 100

            # the caps are told once per topic, whoever subscribes again
            await worker.send({"type": "unregistertrigger", "id": "t-sub", "trigger_type": "queue"})
            await worker.trigger("t-sub2", "queue", "t::hold", {"topic": "t", "queue_config": GREEDY})
        capped = [record.getMessage() for record in caplog.records if "asked past the module's caps" in
                  record.getMessage()]
        assert capped == ["queue topic 't': the queue_config of trigger 't-sub' (function 't::hold') asked past the "
                          "module's caps (max_topic_concurrency, max_topic_retries, max_topic_backoff_ms): "
                          "concurrency 1000000000 → 100, maxRetries 1000000000 → 10, backoffDelayMs 1000000000000 → "
                          "60000"]


async def test_a_failing_job_of_a_subscriber_asking_endless_retries_reaches_the_dlq_after_the_cap() -> None:
    async with _engine(max_topic_retries=2, max_topic_concurrency=4) as (engine, module), \
            ModuleWorker(engine.url) as worker:
        attempts = 0

        async def fail(data: Any) -> None:
            nonlocal attempts
            attempts += 1
            raise RuntimeError("no")

        await worker.function("t::fail", fail)
        await worker.trigger("t-sub", "queue", "t::fail", {"topic": "t", "queue_config": {
            "maxRetries": 10**9, "backoffDelayMs": 1, "concurrency": 50}})
        assert "error" not in await worker.call("enqueue", {"topic": "t", "data": 1})
        # The DLQ move follows the failed result with no event a client can await: poll that condition.
        async with asyncio.timeout(5):  # before: still retrying (2**n ms apart) when this ran out
            while (await worker.result("engine::queue::topic_stats", {"topic": "t"}))["dlq"] != 1:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert attempts == 2
        assert module._topics["t"].consumer.settings.concurrency == 4
