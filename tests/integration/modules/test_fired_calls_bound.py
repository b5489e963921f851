"""Trigger-fired calls bounded in count (max_fired_calls, fire_wait_timeout_ms) in a real engine.

Before the bound every fired call (a pub/sub delivery, a state trigger, a cron tick) was a task with no count
bound: a publisher faster than a slow subscriber grew the engine until it died. Now a publish waits for room (and
fails with ``fire_limit`` when the wait runs out, reaching nobody), and producers with nobody to wait skip and count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from tests.polling import until

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("our max_fired_calls bound")]

PUBSUB = ModuleSpec("modules::pubsub::PubSubModule")
STATE = ModuleSpec("modules::state::StateModule")
CRON = ModuleSpec("modules::cron::CronModule")
OTEL = ModuleSpec("modules::observability::OtelModule")


def engine_with(*modules: ModuleSpec, limit: int, wait_ms: int = 10_000) -> Engine:
    # These tests are about max_fired_calls itself, every subscriber in one worker: that worker's share
    # (max_fired_calls_per_worker, a quarter of it by default) is the whole of it here.
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=list(modules), max_fired_calls=limit,
                                        max_fired_calls_per_worker=limit, fire_wait_timeout_ms=wait_ms))
    assert engine.fired_calls.callee_limit == limit
    return engine


def worker_holding(engine: Engine, function_id: str) -> str:
    """The id of the worker serving ``function_id``, as the engine's fire_limit messages name it."""
    return next(worker.id for worker in engine.workers.values() if function_id in worker.functions)



class Slow:
    """A subscriber handler that holds every call until :meth:`let_go` (a subscriber slower than its publisher)."""

    def __init__(self) -> None:
        self.started: asyncio.Queue[Any] = asyncio.Queue()
        self.gate = asyncio.Event()

    async def __call__(self, data: Any) -> None:
        await self.started.put(data)
        await self.gate.wait()

    async def let_go(self) -> None:
        self.gate.set()
        self.gate = asyncio.Event()

    async def next(self) -> Any:
        return await asyncio.wait_for(self.started.get(), 5)


@pytest.fixture
async def tight() -> AsyncIterator[Engine]:
    async with engine_with(PUBSUB, STATE, limit=10) as engine:
        yield engine


async def test_a_fast_publisher_and_a_slow_subscriber_stay_within_max_fired_calls(tight: Engine) -> None:
    slow = Slow()
    async with ModuleWorker(tight.url) as sub, ModuleWorker(tight.url) as pub:
        await sub.function("slow::on", slow)
        await sub.trigger("slow", "subscribe", "slow::on", {"topic": "t"})
        calls = [asyncio.create_task(pub.call("publish", {"topic": "t", "data": n})) for n in range(200)]
        for _ in range(10):
            await slow.next()
        # ten deliveries run, ten publishes wait their turn, the other 180 found ten waiting already: refused
        refused = [await call for call in calls[20:]]
        assert {frame["error"]["code"] for frame in refused} == {"fire_limit"}
        assert refused[0]["error"]["message"] == (
            "publish to topic 't': none of its 1 subscribers reached: 10 trigger-fired calls in flight "
            f"(max_fired_calls 10), 10 of them to worker {worker_holding(tight, 'slow::on')} "
            "(max_fired_calls_per_worker 10), 10 to slow::on and 10 producers already waiting for room")
        assert all("error" not in frame for frame in [await call for call in calls[:10]])
        assert (tight.fired_calls.in_flight, tight.fired_calls.waiting) == (10, 10)
        # engine tasks: 10 fired calls and 10 waiting publishes (200 fired tasks before the bound)
        assert len(tight.invocations._tasks) == 20
        assert slow.started.empty()
        await slow.let_go()  # the ten waiting get their turn, in order
        assert [await slow.next() for _ in range(10)] == list(range(10, 20))
        assert all("error" not in frame for frame in [await call for call in calls[10:20]])
        await slow.let_go()
        await until(lambda: tight.fired_calls.in_flight == 0)
        assert tight.fired_calls.stats() == {"in_flight": 0, "max_fired_calls": 10, "peak": 10, "waiting": 0,
                                             "skipped": 0, "refused": 180,
                                             "bytes_in_flight": 0, "max_fired_bytes": 256 * 1024 * 1024,
                                             "max_fired_calls_per_worker": 10, "busiest_callee": 0,
                                             "skipped_callee_share": 0}


@contextlib.asynccontextmanager
async def a_publish_waiting_for_room() -> AsyncIterator[tuple[Engine, ModuleWorker, Slow, Slow, asyncio.Task[Any]]]:
    """max_fired_calls 3, two of them held by deliveries on topic "busy" (``held``); a publish to topic "quiet",
    whose two subscribers ("a", "b") both run ``later``, waiting for room for both."""
    held, later = Slow(), Slow()
    async with engine_with(PUBSUB, limit=3) as engine, ModuleWorker(engine.url) as worker:
        await worker.function("held::on", held)
        await worker.trigger("held", "subscribe", "held::on", {"topic": "busy"})
        await worker.trigger("held2", "subscribe", "held::on", {"topic": "busy"})
        for name in ("a", "b"):
            await worker.function(f"{name}::on", later)
            await worker.trigger(name, "subscribe", f"{name}::on", {"topic": "quiet"})
        assert "error" not in await worker.call("publish", {"topic": "busy", "data": "first"})
        assert [await held.next(), await held.next()] == ["first", "first"]
        waiting = asyncio.create_task(worker.call("publish", {"topic": "quiet", "data": "second"}))
        await until(lambda: engine.fired_calls.waiting == 2)
        yield engine, worker, held, later, waiting


async def test_a_publish_waits_for_room_for_all_its_subscribers_then_reaches_them() -> None:
    async with a_publish_waiting_for_room() as (_, _, held, later, waiting):
        # one slot is free but the publish needs two: it is not half-delivered
        assert later.started.empty() and not waiting.done()
        await held.let_go()
        assert "error" not in await waiting
        assert [await later.next(), await later.next()] == ["second", "second"]
        await later.let_go()


async def test_a_subscriber_that_leaves_while_a_publish_waits_for_room_gets_nothing() -> None:
    # Before: the publish fired every subscriber it had seen before its wait, the departed one included.
    async with a_publish_waiting_for_room() as (engine, worker, held, later, waiting):
        await worker.send({"type": "unregistertrigger", "id": "b", "trigger_type": "subscribe"})
        await worker.sync()
        await held.let_go()
        assert "error" not in await waiting
        assert await later.next() == "second"
        await until(lambda: engine.fired_calls.in_flight == 1)  # a's delivery; b's slot went back
        assert later.started.empty()
        await later.let_go()


async def test_a_publish_whose_wait_runs_out_fails_with_fire_limit_reaching_nobody() -> None:
    held = Slow()
    async with engine_with(PUBSUB, limit=1, wait_ms=200) as engine, ModuleWorker(engine.url) as worker:
        await worker.function("held::on", held)
        await worker.trigger("held", "subscribe", "held::on", {"topic": "t"})
        assert "error" not in await worker.call("publish", {"topic": "t", "data": 1})
        assert await held.next() == 1
        started = time.monotonic()
        frame = await worker.call("publish", {"topic": "t", "data": 2})
        assert time.monotonic() - started >= 0.2
        assert frame["error"] == {"code": "fire_limit", "message": (
            "publish to topic 't': none of its 1 subscribers reached: no room within 200 ms "
            "(fire_wait_timeout_ms): 1 trigger-fired calls in flight (max_fired_calls 1), 1 of them to worker "
            f"{worker_holding(engine, 'held::on')} (max_fired_calls_per_worker 1), 1 to held::on")}
        await held.let_go()
        await until(lambda: engine.fired_calls.in_flight == 0)
        assert "error" not in await worker.call("publish", {"topic": "t", "data": 3})
        assert await held.next() == 3  # 2 was never delivered
        await held.let_go()
        assert engine.fired_calls.refused == 1


async def test_a_subscriber_that_publishes_while_every_slot_is_held_fails_at_the_deadline() -> None:
    inner: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    async with engine_with(PUBSUB, limit=1, wait_ms=300) as engine, ModuleWorker(engine.url) as worker:

        async def echo(data: Any) -> None:
            if data == "outer":  # publishes and waits, holding the only slot: the deadline ends it
                await inner.put(await worker.call("publish", {"topic": "t", "data": "inner"}))

        await worker.function("echo::on", echo)
        await worker.trigger("echo", "subscribe", "echo::on", {"topic": "t"})
        assert "error" not in await worker.call("publish", {"topic": "t", "data": "outer"})
        frame = await asyncio.wait_for(inner.get(), 5)
        assert frame["error"]["code"] == "fire_limit"
        assert "no room within 300 ms (fire_wait_timeout_ms)" in frame["error"]["message"]
        await until(lambda: engine.fired_calls.in_flight == 0)


async def test_a_state_write_waits_for_its_triggers_and_fails_with_fire_limit_after_writing() -> None:
    held = Slow()
    async with engine_with(STATE, limit=1, wait_ms=200) as engine, ModuleWorker(engine.url) as worker:
        await worker.function("held::on", held)
        await worker.trigger("held", "state", "held::on", {"scope": "s"})
        assert "error" not in await worker.call("state::set", {"scope": "s", "key": "a", "value": 1})
        assert (await held.next())["new_value"] == 1
        frame = await worker.call("state::set", {"scope": "s", "key": "b", "value": 2})
        assert frame["error"] == {"code": "fire_limit", "message": (
            "state::set of 's'/'b' (done): none of its 1 state trigger handlers reached: no room within 200 ms "
            "(fire_wait_timeout_ms): 1 trigger-fired calls in flight (max_fired_calls 1), 1 of them to worker "
            f"{worker_holding(engine, 'held::on')} (max_fired_calls_per_worker 1), 1 to held::on")}
        assert await worker.result("state::get", {"scope": "s", "key": "b"}) == 2
        # with room, a write waits for it
        waiting = asyncio.create_task(worker.call("state::set", {"scope": "s", "key": "c", "value": 3}))
        await until(lambda: engine.fired_calls.waiting == 1)
        await held.let_go()
        assert "error" not in await waiting
        assert (await held.next())["key"] == "c"
        await held.let_go()


async def test_cron_ticks_with_no_room_are_skipped_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    held = Slow()
    async with engine_with(CRON, OTEL, limit=1) as engine, ModuleWorker(engine.url) as worker:
        await worker.function("jobs::tick", held)
        with caplog.at_level(logging.WARNING, logger="iii_engine.limits"):
            await worker.trigger("every-second", "cron", "jobs::tick", {"expression": "* * * * * *"})
            await held.next()  # the first tick holds the only slot
            await until(lambda: engine.fired_calls.skipped >= 1, within=5)
        assert held.started.empty()
        warning = next(r.getMessage() for r in caplog.records if r.name == "iii_engine.limits")
        assert warning.startswith("trigger-fired calls not made, no room under max_fired_calls 1: 1 skipped "
                                  "(nobody to wait), 0 refused")
        assert "; latest: cron every-second tick " in warning
        health = await worker.result("engine::health::check", {})
        assert health["components"]["fired_calls"]["details"]["skipped"] >= 1
        metrics = await worker.result("engine::metrics::list", {})
        assert metrics["engine_metrics"]["fired_calls"]["max_fired_calls"] == 1
        await held.let_go()


async def test_engine_events_with_no_room_are_skipped_and_counted() -> None:
    async with engine_with(limit=1) as engine:
        assert engine.fire("nobody::there", {}) is True  # fails later (not found): logged, slot given back
        await until(lambda: engine.fired_calls.in_flight == 0)
        assert engine.fired_calls.try_take()
        assert engine.fire("nobody::there", {}) is False
        assert engine.fired_calls.skipped == 1


async def test_engine_stop_ends_a_publish_waiting_for_room() -> None:
    held = Slow()
    engine = engine_with(PUBSUB, limit=1)
    await engine.start()
    try:
        async with ModuleWorker(engine.url) as worker:
            await worker.function("held::on", held)
            await worker.trigger(f"held-{uuid.uuid4()}", "subscribe", "held::on", {"topic": "t"})
            await worker.call("publish", {"topic": "t", "data": 1})
            await held.next()
            waiting = asyncio.create_task(worker.call("publish", {"topic": "t", "data": 2}))
            await until(lambda: engine.fired_calls.waiting == 1)
            started = time.monotonic()
            await asyncio.wait_for(engine.stop(), 5)  # well before the 10 s wait runs out
            assert time.monotonic() - started < 5
            assert engine.fired_calls.waiting == 0
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
    finally:
        await engine.stop()


@pytest.mark.redis
async def test_messages_from_redis_wait_for_room_and_are_counted_when_it_does_not_come() -> None:
    redis = ModuleSpec("modules::pubsub::PubSubModule", {
        "adapter": {"class": "modules::pubsub::RedisAdapter", "config": {"redis_url": "redis://127.0.0.1:6379/0"}}})
    topic = f"t-{uuid.uuid4()}"
    held = Slow()
    async with engine_with(redis, limit=100) as one, engine_with(redis, limit=1, wait_ms=100) as two:
        async with ModuleWorker(one.url) as publisher, ModuleWorker(two.url) as listener:
            await listener.function("held::on", held)
            await listener.trigger("held", "subscribe", "held::on", {"topic": topic})
            for n in range(3):  # accepted by Redis at once: the publishing engine has room
                assert "error" not in await publisher.call("publish", {"topic": topic, "data": n})
            assert await held.next() == 0
            bus: Any = two.modules["pubsub"]._bus  # type: ignore[attr-defined]
            await until(lambda: bus.undelivered == 2)  # each waited 100 ms for the slot the first one holds
            assert two.fired_calls.refused == 2
            await held.let_go()
            await until(lambda: two.fired_calls.in_flight == 0)
            assert "error" not in await publisher.call("publish", {"topic": topic, "data": 3})
            assert await held.next() == 3  # the reader lives on
            await held.let_go()
