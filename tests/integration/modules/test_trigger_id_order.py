"""One trigger id's registrations and withdrawals reach its type in order (the engine holds the id while a type's
``register`` or ``unregister`` of it runs).

Before: worker A registered trigger ``x``; worker C registered ``x`` too, and its pub/sub register waited for
Redis to confirm the SUBSCRIBE; A disconnected meanwhile. A's cleanup unregistered ``x`` at the type, which keeps
one registration per id, so C's subscription went while the engine listed C's trigger active: C got nothing, for
good (17-27 of 200 rounds with pub/sub on Redis). The engine now remembers which registration of an id it handed
each type last, and unregisters only that one; nothing waits on another worker's register (a first fix held the id
across the register: with Redis stalled, other workers' cleanup and connections waited 10 s per queued
registration).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest
from module_worker import ModuleWorker
from redis.asyncio import Redis
from test_engine_attack_pubsub import REDIS_HOST, REDIS_PORT, RedisProxy, engine_on, publish_until_received

from iii.iii_types import TriggerInfo
from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.base import EngineError
from tests.integration.engine.raw import RawWorker
from tests.integration.engine.raw import disconnect as gone
from tests.polling import until

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("engine-core test: the order of one trigger id's "
                                                              "registrations at its type")]

FRAME = {"type": "registertrigger", "id": "x", "trigger_type": "byid", "function_id": "f::a"}


class ById:
    """As pub/sub: a register of an id first forgets the id's registration (the one whose register started last
    wins), ``{"wait": true}`` waits at :attr:`gate`, ``{"bad": true}`` is refused after the forgetting (as a
    SUBSCRIBE Redis does not confirm); unregister takes the id's registration."""

    def __init__(self) -> None:
        self.gate, self.entered = asyncio.Event(), asyncio.Event()
        self.bound: dict[str, Any] = {}
        self.waiting: dict[str, Any] = {}
        self.refuse = 0  # how many registers to come are refused, whatever their config

    async def register(self, trigger: TriggerInfo) -> None:
        self.bound.pop(trigger.id, None)
        self.waiting[trigger.id] = trigger.config
        if trigger.config.get("bad") or self.refuse:
            self.refuse = max(0, self.refuse - 1)
            del self.waiting[trigger.id]
            raise EngineError("subscribe_failed", "refused after letting the id's registration go")
        if trigger.config.get("wait"):
            self.entered.set()
            await self.gate.wait()
        if self.waiting.get(trigger.id) is trigger.config:
            self.bound[trigger.id] = self.waiting.pop(trigger.id)

    async def unregister(self, trigger: TriggerInfo) -> None:
        self.bound.pop(trigger.id, None)
        self.waiting.pop(trigger.id, None)


async def _cleanup_reached_the_id(engine: Engine, worker: RawWorker) -> None:
    """``worker``'s disconnect cleanup began (or ended) and ran as far as it can without waiting on a socket."""
    await until(lambda: worker.worker_id in engine._leaving or worker.worker_id not in engine.workers)
    for _ in range(50):  # loop turns, not time: the cleanup's steps up to the id need no I/O
        await asyncio.sleep(0)


async def test_a_leaving_workers_withdrawal_leaves_anothers_registration_of_the_id_in_flight() -> None:
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


async def test_a_register_waiting_at_its_type_holds_up_no_other_worker() -> None:
    """While C's register of ``x`` waits at its type, A's disconnect cleanup ends and W's registration of ``x`` is
    served at once (it then wins at the type, its register having started last); C's comes back when W's goes."""
    byid = ById()
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[])) as engine:
        engine.register_trigger_type("byid", "one registration per id", byid)
        a, c, w = [await RawWorker.connect(engine.url) for _ in range(3)]
        await a.send({**FRAME, "config": {"who": "a"}})
        await a.sync()
        await c.send({**FRAME, "config": {"who": "c", "wait": True}})
        await asyncio.wait_for(byid.entered.wait(), 5)
        await gone(engine, a)  # before: waited for C's register (10 s per queued SUBSCRIBE with Redis stalled)
        await w.send({**FRAME, "config": {"who": "w"}})
        await w.sync()
        assert byid.bound == {"x": {"who": "w"}}
        byid.gate.set()
        await c.sync()
        current = engine.registry.find_trigger("x")
        assert byid.bound == {"x": {"who": "w"}} and current is not None and current.registrant == w.worker_id
        await w.send({"type": "unregistertrigger", "id": "x", "trigger_type": "byid"})
        await w.sync()
        current = engine.registry.find_trigger("x")
        assert byid.bound == {"x": {"who": "c", "wait": True}}
        assert current is not None and current.registrant == c.worker_id
        assert engine.registry.audit_bytes() == engine.registry._bytes
        assert engine._handed == {("byid", "x"): current} and engine._registering == {}


async def test_a_refused_registration_leaves_the_ids_current_trigger_live_at_its_type() -> None:
    """B's registration of A's trigger id is refused after the type let A's registration go (pub/sub forgets the
    old subscription before its SUBSCRIBE, which Redis may not confirm). Before: A's trigger stayed listed with no
    subscription, for good (0 of 20 publishes reached it)."""
    byid = ById()
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[])) as engine:
        engine.register_trigger_type("byid", "one registration per id", byid)
        a, b = await RawWorker.connect(engine.url), await RawWorker.connect(engine.url)
        await a.send({**FRAME, "config": {"who": "a"}})
        await a.sync()
        await b.send({**FRAME, "config": {"who": "b", "bad": True}})
        await b.sync()
        current = engine.registry.find_trigger("x")
        assert current is not None and current.registrant == a.worker_id
        assert byid.bound == {"x": {"who": "a"}}
        await gone(engine, a)
        assert byid.bound == {} and engine.registry.find_trigger("x") is None and engine._handed == {}


async def test_worker_supplied_trigger_ids_are_clipped_in_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    byid = ById()
    huge = "x" * 200_000
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[])) as engine:
        engine.register_trigger_type("byid", "one registration per id", byid)
        a, b = await RawWorker.connect(engine.url), await RawWorker.connect(engine.url)
        with caplog.at_level(logging.INFO, logger="iii_engine"):
            for worker, trigger_type in ((a, "byid"), (b, "byid"), (a, "unknown-type")):
                await worker.send({**FRAME, "id": huge, "trigger_type": trigger_type, "config": {}})
                await worker.sync()
            await b.send({"type": "unregistertrigger", "id": huge + "y", "trigger_type": "byid"})
            await b.sync()
            await gone(engine, b)
        assert caplog.records
        assert max(len(record.getMessage()) for record in caplog.records) < 5_000


async def test_a_trigger_its_type_refuses_again_gives_way_to_the_registration_it_replaced() -> None:
    """C's ``x`` is replaced by A's (kept, E12); B's registration is refused after the type let A's go, and so is A's
    handed again (Redis still not confirming): A's is dropped with a warning, and C's comes back. Before: C's stayed
    kept, listed by nobody, for good (0 of 10 publishes reached it)."""
    byid = ById()
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[])) as engine:
        engine.register_trigger_type("byid", "one registration per id", byid)
        c, a, b = [await RawWorker.connect(engine.url) for _ in range(3)]
        for worker in (c, a):
            await worker.send({**FRAME, "config": {"who": worker.worker_id}})
            await worker.sync()
        byid.refuse = 2  # B's, then A's handed again
        await b.send({**FRAME, "config": {"who": b.worker_id}})
        await b.sync()
        current = engine.registry.find_trigger("x")
        assert current is not None and current.registrant == c.worker_id
        assert byid.bound == {"x": {"who": c.worker_id}}
        assert engine.registry.audit_bytes() == engine.registry._bytes


async def test_a_queue_register_waiting_for_room_is_superseded_by_a_later_one_of_its_id() -> None:
    """At max_topics a queue register makes room before it touches its tables. Before: A's register of ``x`` (new
    topic) waited there while B's, started later, finished; A's then overwrote it in the queue module, so the engine
    listed B's trigger while A's ran (10 of 10 rounds) and a job for B's topic reached nobody."""
    modules = [ModuleSpec("modules::queue::QueueModule", {"max_topics": 2})]
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=modules)) as engine:
        queue: Any = engine.module("queue")
        p, a, b = [await RawWorker.connect(engine.url) for _ in range(3)]
        await a.register("a::f")
        await b.register("b::f")
        for i in (1, 2):  # two topics left with nothing: a new topic first makes room
            await p.send({"type": "registertrigger", "id": f"p{i}", "trigger_type": "queue", "function_id": "a::f",
                          "config": {"topic": f"u{i}"}})
        await p.sync()
        for i in (1, 2):
            await p.send({"type": "unregistertrigger", "id": f"p{i}"})
        await p.sync()
        frame = {"type": "registertrigger", "id": "x", "trigger_type": "queue"}
        await a.send({**frame, "function_id": "a::f", "config": {"topic": "ta"}})
        await b.send({**frame, "function_id": "b::f", "config": {"topic": "tb"}})
        await a.sync()
        await b.sync()
        await until(lambda: not engine._registering)
        current = engine.registry.find_trigger("x")
        assert current is not None and current.function_id == "b::f"
        assert queue._topic_of_trigger.get("x") == "tb"
        assert queue._topics["tb"].subscribers["x"].function_id == "b::f"
        await gone(engine, a)
        assert queue._topic_of_trigger.get("x") == "tb"
