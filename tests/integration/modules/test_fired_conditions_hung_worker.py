"""A cron tick's or a pub/sub delivery's condition holds a place in its own worker's max_fired_calls_per_worker
share while it runs (a state or stream trigger's run holds its handler worker's place already, and asks without one).

Before, a condition ran in its trigger's max_fired_calls slot but on no worker's share (the share was checked only
when the trigger's call was fired, after the condition): a condition worker that never answered took every slot of
the engine (ten every-second cron triggers, max_fired_calls 40: all 40 within 4 s), and another worker's publish to
an unrelated topic failed with fire_limit.
"""

from __future__ import annotations

import asyncio
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


async def test_a_state_trigger_whose_condition_is_on_its_handlers_worker_handles_every_event(engine: Engine) -> None:
    # A state or stream trigger's run holds its handler worker's place while its condition runs, so its condition
    # takes none of its own (re-attack: a second place on the same worker lost half of a burst's events, all of them
    # at a share of 1). A hung condition there holds its handler workers' shares, as before.
    handled: asyncio.Queue[Any] = asyncio.Queue()

    async def yes(data: Any) -> bool:
        return True

    async with ModuleWorker(engine.url) as app, ModuleWorker(engine.url) as writer:
        await app.function("app::yes", yes)
        await app.function("app::on", handled.put)
        await app.trigger("st", "state", "app::on", {"scope": "s", "condition_function_id": "app::yes"})
        writes = [writer.call("state::set", {"scope": "s", "key": f"k{n}", "value": n}) for n in range(SHARE)]
        assert all("error" not in frame for frame in await asyncio.gather(*writes))
        got = sorted([(await asyncio.wait_for(handled.get(), 5))["key"] for _ in range(SHARE)])
        assert got == [f"k{n}" for n in range(SHARE)]
        assert engine.fired_calls.skipped_callee_share == 0


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
