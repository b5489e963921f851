"""Trigger-fired calls in flight to one callee worker are bounded by its share (max_fired_calls_per_worker).

Before, a subscriber that read its frames and never answered held every max_fired_calls slot for as long as it
stayed connected (no invocation_timeout_ms by default): after 10,500 void publishes to its topic another worker got
0 cron ticks in 10 s and its publish to another topic failed after 10 s with fire_limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from tests.polling import until

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("our max_fired_calls_per_worker share")]

LIMIT = 40
SHARE = LIMIT // 4  # the default share: a quarter of max_fired_calls
FLOOD = 200


def worker_serving(engine: Engine, function_id: str) -> str:
    return next(worker.id for worker in engine.workers.values() if function_id in worker.functions)


async def never(data: Any) -> None:
    """A handler that never answers (its worker still reads its frames)."""
    await asyncio.Event().wait()


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    modules = [ModuleSpec("modules::pubsub::PubSubModule"), ModuleSpec("modules::cron::CronModule")]
    config = EngineConfig(host="127.0.0.1", port=0, max_fired_calls=LIMIT, modules=modules)
    async with Engine(config=config) as engine:
        yield engine


async def test_a_hung_subscriber_flooded_leaves_other_workers_their_cron_ticks_and_publishes(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    ticks: asyncio.Queue[Any] = asyncio.Queue()
    others: asyncio.Queue[Any] = asyncio.Queue()

    async def tick(data: Any) -> None:
        await ticks.put(data)

    async def other(data: Any) -> None:
        await others.put(data)

    with caplog.at_level(logging.WARNING, logger="iii_engine.limits"):
        async with ModuleWorker(engine.url) as hung, ModuleWorker(engine.url) as publisher, \
                ModuleWorker(engine.url) as good:
            await hung.function("hung::sub", never)
            await hung.trigger("hsub", "subscribe", "hung::sub", {"topic": "busy"})
            hung_id = worker_serving(engine, "hung::sub")
            for n in range(FLOOD):
                await publisher.send({"type": "invokefunction", "function_id": "publish", "action": {"type": "void"},
                                      "data": {"topic": "busy", "data": n}})
            await publisher.sync()
            await until(lambda: engine.fired_calls.in_flight >= SHARE)

            # another worker's cron ticks and its publish to another topic are served as usual
            await good.function("good::tick", tick)
            await good.function("good::other", other)
            await good.trigger("gcron", "cron", "good::tick", {"expression": "* * * * * *"})
            await good.trigger("gsub", "subscribe", "good::other", {"topic": "quiet"})
            await asyncio.wait_for(ticks.get(), 3)
            started = time.monotonic()
            assert "error" not in await good.call("publish", {"topic": "quiet", "data": "hello"})
            assert time.monotonic() - started < 1
            assert await asyncio.wait_for(others.get(), 1) == "hello"
            await until(lambda: engine.fired_calls.skipped_callee_share >= FLOOD - SHARE)
            # before: all 40 slots, the rest of the flood waiting for room (then failing with fire_limit)
            assert engine.fired_calls.in_flight == SHARE

            stats = engine.fired_calls.stats()
            assert (stats["max_fired_calls_per_worker"], stats["busiest_callee"]) == (SHARE, SHARE)
            assert stats["skipped_callee_share"] == FLOOD - SHARE
            assert stats["skipped"] >= FLOOD - SHARE
            assert engine.fired_calls.degraded()  # engine::health::check's fired_calls component
            # one warning (rate-limited) naming the callee worker and its function
            lines = [r.getMessage() for r in caplog.records if "max_fired_calls_per_worker" in r.getMessage()]
            assert len(lines) == 1
            assert lines[0].startswith(f"trigger-fired calls not made, their callee worker at "
                                       f"max_fired_calls_per_worker {SHARE}: 1 since the last warning")
            assert (f"latest: a call of hung::sub: worker {hung_id} has {SHARE} trigger-fired calls in flight "
                    f"(max_fired_calls_per_worker {SHARE}), {SHARE} of them to hung::sub") in lines[0]
        # the hung worker left: its calls ended, its share with them
        await until(lambda: engine.fired_calls.in_flight == 0)
        assert engine.fired_calls.stats()["busiest_callee"] == 0
        assert engine.fired_calls._callees == {}


async def test_the_other_subscribers_of_a_fan_out_get_it_and_the_publisher_is_told(engine: Engine) -> None:
    received: asyncio.Queue[Any] = asyncio.Queue()

    async def good(data: Any) -> None:
        await received.put(data)

    async with ModuleWorker(engine.url) as hung, ModuleWorker(engine.url) as healthy, \
            ModuleWorker(engine.url) as publisher:
        await hung.function("hung::sub", never)
        await hung.trigger("hsub", "subscribe", "hung::sub", {"topic": "mixed"})
        await healthy.function("good::sub", good)
        await healthy.trigger("gsub", "subscribe", "good::sub", {"topic": "mixed"})
        hung_id = worker_serving(engine, "hung::sub")
        for n in range(SHARE):
            assert "error" not in await publisher.call("publish", {"topic": "mixed", "data": n})
            assert await asyncio.wait_for(received.get(), 2) == n
        frame = await publisher.call("publish", {"topic": "mixed", "data": "past the share"})
        # the healthy subscriber got it; the publisher hears that the hung one did not, and why
        assert await asyncio.wait_for(received.get(), 2) == "past the share"
        assert frame.get("error", {}).get("code") == "fire_limit", frame
        assert frame["error"]["message"] == (
            f"publish: 1 of the trigger-fired calls it set off not made (the others were): the call of hung::sub: "
            f"worker {hung_id} has {SHARE} trigger-fired calls in flight (max_fired_calls_per_worker {SHARE}), "
            f"{SHARE} of them to hung::sub: a call counts until its handler answers or its worker disconnects")
        assert engine.fired_calls.skipped_callee_share == 1
