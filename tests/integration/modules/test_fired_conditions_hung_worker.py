"""A trigger's condition holds a place in its own worker's max_fired_calls_per_worker share while it runs.

Before, a condition ran in its trigger's max_fired_calls slot but on no worker's share (the share was checked only
when the trigger's call was fired, after the condition): a condition worker that never answered took every slot of
the engine (ten every-second cron triggers, max_fired_calls 40: all 40 within 4 s), and another worker's publish to
an unrelated topic failed with fire_limit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from tests.polling import until

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("our max_fired_calls_per_worker share")]

LIMIT = 12
SHARE = 3


async def never(data: Any) -> None:
    """A condition that never answers (its worker still reads its frames)."""
    await asyncio.Event().wait()


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    modules = [ModuleSpec("modules::pubsub::PubSubModule"), ModuleSpec("modules::cron::CronModule"),
               ModuleSpec("modules::state::StateModule")]
    config = EngineConfig(host="127.0.0.1", port=0, max_fired_calls=LIMIT, max_fired_calls_per_worker=SHARE,
                          fire_wait_timeout_ms=500, modules=modules)
    async with Engine(config=config) as engine:
        yield engine


class Quiet:
    """A subscriber of an unrelated topic on a worker of its own, and that worker's publishes to it."""

    def __init__(self, worker: ModuleWorker) -> None:
        self.worker = worker
        self.received: asyncio.Queue[Any] = asyncio.Queue()

    async def subscribe(self) -> Quiet:
        await self.worker.function("good::other", self.received.put)
        await self.worker.trigger("gsub", "subscribe", "good::other", {"topic": "quiet"})
        return self

    async def publish_goes_through(self) -> None:
        """A publish to it is answered without error and delivered."""
        frame = await self.worker.call("publish", {"topic": "quiet", "data": "hello"})
        assert "error" not in frame, frame
        assert await asyncio.wait_for(self.received.get(), 2) == "hello"


async def test_a_hung_cron_condition_holds_its_workers_share_only(engine: Engine) -> None:
    async def tick(data: Any) -> None:
        raise AssertionError("the condition never answers: no tick may run")

    async with ModuleWorker(engine.url) as cond, ModuleWorker(engine.url) as app, ModuleWorker(engine.url) as good:
        await cond.function("cond::hang", never)
        await app.function("app::tick", tick)
        quiet = await Quiet(good).subscribe()
        for n in range(LIMIT):
            await app.trigger(f"c{n}", "cron", "app::tick",
                              {"expression": "* * * * * *", "condition_function_id": "cond::hang"})
        # one second's ticks: SHARE conditions asked, the others skipped for the condition worker's share
        await until(lambda: engine.fired_calls.skipped_callee_share >= LIMIT - SHARE)
        assert engine.fired_calls.in_flight == SHARE  # before: all LIMIT slots, held for good
        assert engine.fired_calls.stats()["busiest_callee"] == SHARE
        await quiet.publish_goes_through()  # before: fire_limit, 12 trigger-fired calls in flight
        skipped = engine.fired_calls.skipped_callee_share
        await until(lambda: engine.fired_calls.skipped_callee_share >= skipped + LIMIT)  # a later second's ticks
        assert engine.fired_calls.in_flight == SHARE
        await quiet.publish_goes_through()
    await until(lambda: engine.fired_calls.in_flight == 0)
    assert engine.fired_calls._callees == {}


async def test_a_hung_subscriber_condition_holds_its_workers_share_only(engine: Engine) -> None:
    async def gated(data: Any) -> None:
        raise AssertionError("the condition never answers: the subscriber may not run")

    async with ModuleWorker(engine.url) as cond, ModuleWorker(engine.url) as app, \
            ModuleWorker(engine.url) as good, ModuleWorker(engine.url) as publisher:
        await cond.function("cond::hang", never)
        await app.function("app::gated", gated)
        await app.trigger("gated", "subscribe", "app::gated", {"topic": "gated", "condition_function_id": "cond::hang"})
        quiet = await Quiet(good).subscribe()
        for n in range(LIMIT + 4):
            frame = await publisher.call("publish", {"topic": "gated", "data": n})
            assert "error" not in frame, frame  # (the skip is the subscriber's, not the publisher's to hear)
        await until(lambda: engine.fired_calls.skipped_callee_share >= LIMIT + 4 - SHARE)
        assert engine.fired_calls.in_flight == SHARE
        await quiet.publish_goes_through()


async def test_a_hung_state_trigger_condition_holds_its_workers_share_only(engine: Engine) -> None:
    # Each state trigger's call holds its handler's worker's share: with handlers on four workers, their shares
    # added up to the whole room, and a hung condition held all of it.
    async def handler(data: Any) -> None:
        raise AssertionError("the condition never answers: no handler may run")

    async with ModuleWorker(engine.url) as cond, ModuleWorker(engine.url) as good, \
            ModuleWorker(engine.url) as writer:
        await cond.function("cond::hang", never)
        quiet = await Quiet(good).subscribe()
        async with contextlib.AsyncExitStack() as stack:
            for n in range(LIMIT // SHARE):
                worker = await stack.enter_async_context(ModuleWorker(engine.url))
                await worker.function(f"app{n}::on", handler)
                await worker.trigger(f"st{n}", "state", f"app{n}::on",
                                     {"scope": "s", "condition_function_id": "cond::hang"})
            for n in range(SHARE):  # each write: one call per handler worker, LIMIT in all
                assert "error" not in await writer.call("state::set", {"scope": "s", "key": "k", "value": n})
            await until(lambda: engine.fired_calls.skipped_callee_share >= LIMIT - SHARE)
            assert engine.fired_calls.in_flight == SHARE  # before: LIMIT
            await quiet.publish_goes_through()


async def test_a_condition_that_answers_gives_its_place_back_before_its_call_to_the_same_worker(
        engine: Engine) -> None:
    ticks: asyncio.Queue[Any] = asyncio.Queue()

    async def yes(data: Any) -> bool:
        return True

    async def tick(data: Any) -> None:
        await ticks.put(data)

    async with ModuleWorker(engine.url) as app:
        await app.function("app::yes", yes)
        await app.function("app::on", tick)
        await app.trigger("sub", "subscribe", "app::on", {"topic": "t", "condition_function_id": "app::yes"})
        for n in range(SHARE * 3):  # one at a time: the condition's place and the call's never add up past the share
            assert "error" not in await app.call("publish", {"topic": "t", "data": n})
            assert await asyncio.wait_for(ticks.get(), 2) == n
        await until(lambda: engine.fired_calls.in_flight == 0)
        assert engine.fired_calls.skipped_callee_share == 0
        assert engine.fired_calls._callees == {}
