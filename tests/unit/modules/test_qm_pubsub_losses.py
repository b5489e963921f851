"""The Redis bus's undelivered-message warnings go through ``LossLog``: a burst's count is logged at its end; a huge
topic is cut in warnings and errors.

Before: the bus kept its own copy of the rate-limited counters; the messages lost after the first warning of a
burst were logged only if another one was lost 10 s later, so a burst that ended was never reported in full.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import pytest
from fake_services import FakeServices, started
from polling import until

from iii.iii_types import TriggerInfo
from iii_engine.limits import FIRE_LIMIT, FiredCalls
from iii_engine.modules.base import EngineError
from iii_engine.modules.pubsub import PubSubModule
from iii_engine.modules.pubsub import bus as bus_module
from iii_engine.modules.pubsub.bus import RedisBus

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
async def bus() -> AsyncIterator[RedisBus]:
    redis_bus = RedisBus("redis://127.0.0.1:6379/0")  # never connects: only its accounting is used
    yield redis_bus
    await redis_bus.close()


def bus_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == bus_module.__name__]


async def test_the_end_of_a_burst_is_logged_when_its_interval_is_over(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(bus_module, "_WARN_INTERVAL_S", 0.1)
    redis_bus = RedisBus("redis://127.0.0.1:6379/0")
    try:
        with caplog.at_level(logging.WARNING, logger=bus_module.__name__):
            for n in range(3):
                redis_bus._not_delivered("t", RuntimeError(f"store down {n}"))
            await until(lambda: len(bus_warnings(caplog)) == 2, within=5)
        assert bus_warnings(caplog) == [
            "1 pubsub messages from Redis not delivered (1 in all); latest on topic 't': store down 0",
            "2 pubsub messages from Redis not delivered (3 in all)",
        ]
    finally:
        await redis_bus.close()


async def test_closing_the_bus_logs_the_burst_not_logged_yet(
        bus: RedisBus, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=bus_module.__name__):
        bus._not_delivered("a", RuntimeError("x"))
        bus._not_delivered("b", RuntimeError("y"))
        assert len(bus_warnings(caplog)) == 1  # rate-limited: the second waits for the interval's end
        await bus.close()
    assert bus.undelivered == 2
    assert bus_warnings(caplog)[1:] == ["1 pubsub messages from Redis not delivered (2 in all)"]


async def test_a_long_topic_is_cut_in_the_warning(bus: RedisBus, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=bus_module.__name__):
        bus._not_delivered("t" * 100_000, RuntimeError("x"))
    (warning,) = bus_warnings(caplog)
    assert len(warning) < 400


async def test_a_publish_refused_for_want_of_room_names_a_huge_topic_cut(caplog: pytest.LogCaptureFixture) -> None:
    # before: the fire_limit error (answered to the publisher) and the engine's warning quoted the whole topic
    services = FakeServices()
    services.fired_calls = FiredCalls(1, 50)  # one slot, a 50 ms wait for it
    module = PubSubModule(services, {})
    await module.start()
    topic = "t" * 1_000_000
    try:
        services.collect("f")  # served: a subscriber of a function nobody serves takes no slot
        await services.trigger("subscribe", "s", "f", {"topic": topic})
        assert services.fired_calls.try_take()  # the engine is full
        with caplog.at_level(logging.WARNING, logger="iii_engine.limits"), pytest.raises(EngineError) as refused:
            await services.call("publish", {"topic": topic, "data": 1})
        assert refused.value.code == FIRE_LIMIT
        assert len(str(refused.value)) < 1_000
        assert [len(r.getMessage()) < 2_000 for r in caplog.records if r.name == "iii_engine.limits"] == [True]
    finally:
        await module.stop()
        services.fired_calls.close()


@pytest.mark.redis
async def test_registers_of_one_trigger_at_once_on_other_topics_leave_no_ghost_subscriber(
        services: FakeServices) -> None:
    # before: the first register, waiting on Redis for the old topic's UNSUBSCRIBE, then stored the trigger under
    # its own topic while the second had stored it under another: unregister removed one, the other got every
    # message of its topic for the engine's life
    prefix = f"qm-{uuid.uuid4()}"

    def info(topic: str) -> TriggerInfo:
        return TriggerInfo(id="s", trigger_type="subscribe", function_id="f", config={"topic": f"{prefix}-{topic}"})

    redis = {"adapter": {"class": "modules::pubsub::RedisAdapter", "config": {"redis_url": "redis://127.0.0.1:6379/0"}}}
    async with started(PubSubModule(services, redis)) as module:
        await module.register(info("a"))
        await asyncio.gather(module.register(info("b")), module.register(info("c")))
        await module.unregister(info("c"))
        assert module._subscribers == {} and module._topic_of_trigger == {}
