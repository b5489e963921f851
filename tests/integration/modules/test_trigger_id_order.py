"""One trigger id's registrations and withdrawals reach its type in order (the engine holds the id while a type's
``register`` or ``unregister`` of it runs).

Before: worker A registered trigger ``x``; worker C registered ``x`` too, and its pub/sub register waited for
Redis to confirm the SUBSCRIBE; A disconnected meanwhile. A's cleanup unregistered ``x`` at the type, which keeps
one registration per id, so C's subscription went while the engine listed C's trigger active: C got nothing, for
good (17-27 of 200 rounds with pub/sub on Redis).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from module_worker import ModuleWorker
from redis.asyncio import Redis
from test_engine_attack_pubsub import REDIS_HOST, REDIS_PORT, RedisProxy, engine_on, publish_until_received

from iii.iii_types import TriggerInfo
from iii_engine import Engine, EngineConfig
from tests.integration.engine.raw import RawWorker
from tests.integration.engine.raw import disconnect as gone
from tests.polling import until

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("engine-core test: the order of one trigger id's "
                                                              "registrations at its type")]


async def _cleanup_reached_the_id(engine: Engine, worker: RawWorker) -> None:
    """``worker``'s disconnect cleanup began (or ended) and ran as far as it can without waiting on a socket."""
    await until(lambda: worker.worker_id in engine._leaving or worker.worker_id not in engine.workers)
    for _ in range(50):  # loop turns, not time: the cleanup's steps up to the id need no I/O
        await asyncio.sleep(0)


async def test_a_leaving_workers_withdrawal_waits_for_anothers_registration_of_the_id() -> None:
    gate, entered = asyncio.Event(), asyncio.Event()
    bound: dict[str, Any] = {}  # what the type runs, by id
    waiting: dict[str, Any] = {}
    calls: list[tuple[str, Any]] = []

    class ById:  # as pub/sub: a register of an id first forgets the id's registration; unregister takes the id's
        async def register(self, trigger: TriggerInfo) -> None:
            calls.append(("register", trigger.config))
            bound.pop(trigger.id, None)
            waiting[trigger.id] = trigger.config
            if trigger.config == {"who": "c"}:
                entered.set()
                await gate.wait()
            if waiting.get(trigger.id) is trigger.config:
                bound[trigger.id] = waiting.pop(trigger.id)

        async def unregister(self, trigger: TriggerInfo) -> None:
            calls.append(("unregister", trigger.config))
            bound.pop(trigger.id, None)
            waiting.pop(trigger.id, None)

    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[])) as engine:
        engine.register_trigger_type("byid", "one registration per id", ById())
        a, c = await RawWorker.connect(engine.url), await RawWorker.connect(engine.url)
        frame = {"type": "registertrigger", "id": "x", "trigger_type": "byid", "function_id": "f::a"}
        await a.send({**frame, "config": {"who": "a"}})
        await a.sync()
        await c.send({**frame, "config": {"who": "c"}})
        await asyncio.wait_for(entered.wait(), 5)
        leaving = asyncio.create_task(gone(engine, a))
        await _cleanup_reached_the_id(engine, a)
        gate.set()
        await leaving
        await c.sync()
        assert bound == {"x": {"who": "c"}}, calls
        current = engine.registry.find_trigger("x")
        assert current is not None and current.registrant == c.worker_id
        assert calls == [("register", {"who": "a"}), ("register", {"who": "c"})]  # A's was never unregistered:
        # C's replaced it at the type, and a later unregister of the id would have taken C's
        assert engine.registry.audit_bytes() == engine.registry._bytes
        await c.close()


@pytest.mark.redis
async def test_a_subscription_registered_while_the_ids_previous_registrant_leaves_gets_messages() -> None:
    first, second = f"order-{uuid.uuid4()}", f"order-{uuid.uuid4()}"
    redis = Redis.from_url(f"redis://{REDIS_HOST}:{REDIS_PORT}/0")
    try:
        async with RedisProxy() as proxy, engine_on(proxy.url) as engine, ModuleWorker(engine.url) as c:
            a = await RawWorker.connect(engine.url)
            await a.send({"type": "registertrigger", "id": "x", "trigger_type": "subscribe", "function_id": "a::on",
                          "config": {"topic": first}})
            await a.sync()
            got: asyncio.Queue[Any] = asyncio.Queue()
            await c.function("c::on", got.put)
            proxy.hold()  # C's SUBSCRIBE waits in the proxy for Redis
            await c.send({"type": "registertrigger", "id": "x", "trigger_type": "subscribe", "function_id": "c::on",
                          "config": {"topic": second}})
            pubsub: Any = engine.module("pubsub")
            await until(lambda: pubsub._topic_of_trigger.get("x") == second)  # C's register waits for Redis
            leaving = asyncio.create_task(gone(engine, a))
            await _cleanup_reached_the_id(engine, a)
            proxy.release()
            await leaving
            await c.sync()
            current = engine.registry.find_trigger("x")
            assert current is not None and current.function_id == "c::on"
            await publish_until_received(redis, second, got, within=5)
    finally:
        await redis.aclose()
