"""``max_topics_per_worker``: the topics made for one worker (its ``queue`` triggers on topics that did not exist,
its enqueues to new topics) are at most a share of ``max_topics``, so another worker's trigger and enqueues still
get topics (before, one worker's triggers on 10,000 made-up topics took every one of ``max_topics``); a topic counts
until it is forgotten (no subscriber, no job, no dead letter), also after its worker left."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine.modules.queue.settings import QueueModuleSettings
from iii_engine.settings import ConfigError
from tests.integration.modules.queue_stores import queue_engine

pytestmark = pytest.mark.our_engine("configures queue limits")

SHARE_REFUSAL = r"refused: worker [0-9a-f-]+ made 2 of the module's topics, its share \(max_topics_per_worker 2;"


async def _nothing(data: Any) -> None:
    return None


async def _topics(worker: ModuleWorker) -> list[str]:
    return [t["topic"] for t in (await worker.result("engine::queue::list_topics", {}))["topics"]]


async def _worker_id(worker: ModuleWorker, function_id: str) -> str:
    workers = await worker.result("engine::workers::list", {})
    return next(w["id"] for w in workers["workers"] if function_id in w["functions"])


async def test_one_workers_triggers_leave_another_worker_its_topics(caplog: pytest.LogCaptureFixture) -> None:
    """A's triggers on 4 made-up topics take 2 (its share), and B's trigger and enqueues get topics (before: A's
    took all 4 of max_topics, and B's trigger was refused)."""
    caplog.set_level(logging.INFO)
    ran = asyncio.Event()

    async def handle(data: Any) -> None:
        ran.set()

    async with queue_engine(max_topics=4, max_topics_per_worker=2) as (engine, _module), \
            ModuleWorker(engine.url) as attacker, ModuleWorker(engine.url) as other:
        await attacker.function("a::h", _nothing)
        for i in range(4):
            await attacker.trigger(f"ta{i}", "queue", "a::h", {"topic": f"made-up-{i}"})
        assert await _topics(attacker) == ["made-up-0", "made-up-1"]
        assert [r for r in caplog.messages if "trigger ta2 (queue) rejected: enqueue_error: Topic 'made-up-2' "
                "refused: worker" in r and "its share (max_topics_per_worker 2" in r]
        await other.function("b::h", handle)
        await other.trigger("tb", "queue", "b::h", {"topic": "mine"})
        assert await other.result("enqueue", {"topic": "mine", "data": 1}) is None
        await asyncio.wait_for(ran.wait(), 10)
        assert await other.result("enqueue", {"topic": "mine-too", "data": 1}) is None  # B's second: in its share
        refused = await other.call("enqueue", {"topic": "mine-three", "data": 1})
        assert refused["error"]["code"] == "enqueue_error"
        assert refused["error"]["message"].startswith("Topic 'mine-three' refused: worker ")
        assert "made 2 of the module's topics, its share (max_topics_per_worker 2" in refused["error"]["message"]


async def test_triggers_naming_functions_nobody_serves_count_against_their_registrant() -> None:
    """Made-up function ids do not escape the bound: a trigger counts against the worker that registered it."""
    async with queue_engine(max_topics=4, max_topics_per_worker=2) as (engine, module), \
            ModuleWorker(engine.url) as worker:
        await worker.function("w::h", _nothing)
        for i in range(4):
            await worker.trigger(f"t{i}", "queue", f"made::up{i}", {"topic": f"t{i}"})
        assert await _topics(worker) == ["t0", "t1"]
        assert module._made_for == {await _worker_id(worker, "w::h"): 2}


async def test_triggers_naming_another_workers_function_use_up_their_registrants_share() -> None:
    """A worker's triggers naming another worker's function count against the worker that registered them, not the
    function's server (before: A's 2 triggers on made-up topics naming B's function took B's share, and B's own
    trigger on a new topic was refused)."""
    async with queue_engine(max_topics=4, max_topics_per_worker=2) as (engine, module), \
            ModuleWorker(engine.url) as victim, ModuleWorker(engine.url) as attacker:
        await victim.function("v::h", _nothing)
        await attacker.function("a::h", _nothing)
        for i in range(3):
            await attacker.trigger(f"ta{i}", "queue", "v::h", {"topic": f"made-up-{i}"})
        assert await _topics(attacker) == ["made-up-0", "made-up-1"]
        await victim.trigger("tv", "queue", "v::h", {"topic": "mine"})
        assert "mine" in await _topics(victim)
        assert module._made_for == {await _worker_id(attacker, "a::h"): 2, await _worker_id(victim, "v::h"): 1}


async def test_a_topic_counts_until_it_is_forgotten_also_after_its_worker_left() -> None:
    """The counts follow the topics exactly: an unsubscribed empty topic makes room for its worker's next; a topic
    left by a worker that disconnected counts against that worker while its dead letter keeps it, and not after."""
    failed = asyncio.Event()

    async def fail(data: Any) -> None:
        failed.set()
        raise RuntimeError("no")

    async with queue_engine(max_topics=3, max_topics_per_worker=2) as (engine, module), \
            ModuleWorker(engine.url) as admin:
        async with ModuleWorker(engine.url) as leaving:
            await leaving.function("l::h", fail)
            first = await _worker_id(leaving, "l::h")
            await leaving.trigger("t0", "queue", "l::h", {"topic": "dead", "queue_config": {"maxRetries": 1}})
            await leaving.trigger("t1", "queue", "l::h", {"topic": "empty"})
            await leaving.trigger("t2", "queue", "l::h", {"topic": "third"})  # past its share
            assert await _topics(leaving) == ["dead", "empty"]
            await leaving.send({"type": "unregistertrigger", "id": "t1", "trigger_type": "queue"})
            await leaving.trigger("t2", "queue", "l::h", {"topic": "third"})  # "empty" is forgotten to make room
            assert await _topics(leaving) == ["dead", "third"]
            assert module._made_for == {first: 2}
            assert await leaving.result("enqueue", {"topic": "dead", "data": 1}) is None
            await asyncio.wait_for(failed.wait(), 10)
            for _ in range(1000):  # its dead letter is stored once the handler's failure is back
                stats = await leaving.result("engine::queue::topic_stats", {"topic": "dead"})
                if stats["dlq"] == 1:
                    break
            assert stats["dlq"] == 1
        await admin.function("n::h", _nothing)
        newcomer = await _worker_id(admin, "n::h")
        for topic in ("n0", "n1"):  # n1 needs room: "third" (no subscriber, no job) goes, "dead" stays
            await admin.trigger(f"t-{topic}", "queue", "n::h", {"topic": topic})
        assert await _topics(admin) == ["dead", "n0", "n1"]
        assert module._made_for == {first: 1, newcomer: 2}
        letters = await admin.result("engine::queue::dlq_messages", {"topic": "dead"})
        await admin.result("iii::queue::discard_message", {"queue": "dead",
                                                           "message_id": letters["messages"][0]["id"]})
        await admin.send({"type": "unregistertrigger", "id": "t-n1", "trigger_type": "queue"})
        await admin.trigger("t-n2", "queue", "n::h", {"topic": "n2"})  # at its share: "dead" and "n1" go
        assert await _topics(admin) == ["n0", "n2"]
        assert module._made_for == {newcomer: 2}


async def test_a_worker_reconnecting_finds_its_topics_counted_against_it() -> None:
    """A worker connecting again (a new id) registers its triggers again: the topics they keep count against it, not
    against the id gone (before, each reconnect gave it a new share on top of the topics it kept: 4 reconnects took
    every topic); a topic an enqueue made counts against the worker whose trigger then subscribes to it."""
    async with queue_engine(max_topics=4, max_topics_per_worker=2) as (engine, module), \
            ModuleWorker(engine.url) as admin:
        async with ModuleWorker(engine.url) as before:
            await before.function("w::h", _nothing)
            for i in range(2):
                await before.trigger(f"t{i}", "queue", "w::h", {"topic": f"kept{i}"})
        async with ModuleWorker(engine.url) as again:
            await again.function("w::h", _nothing)
            for i in range(2):
                await again.trigger(f"t{i}", "queue", "w::h", {"topic": f"kept{i}"})
            await again.trigger("t2", "queue", "w::h", {"topic": "one-more"})
            assert await _topics(again) == ["kept0", "kept1"]
            now = await _worker_id(again, "w::h")
            assert module._made_for == {now: 2}
        await admin.function("p::h", _nothing)
        assert await admin.result("enqueue", {"topic": "produced", "data": 1}) is None
        producer = await _worker_id(admin, "p::h")
        assert module._made_for == {now: 2, producer: 1}
        async with ModuleWorker(engine.url) as consumer:
            await consumer.function("c::h", _nothing)
            await consumer.trigger("tc", "queue", "c::h", {"topic": "produced"})
            assert module._made_for == {now: 2, await _worker_id(consumer, "c::h"): 1}


def test_max_topics_per_worker_is_at_most_max_topics_and_defaults_to_a_quarter() -> None:
    with pytest.raises(ConfigError) as refused:
        QueueModuleSettings.parse({"max_topics": 10, "max_topics_per_worker": 11})
    assert str(refused.value) == "max_topics_per_worker: must be <= max_topics (10), got 11"
    assert QueueModuleSettings.parse({"max_topics": 10, "max_topics_per_worker": 10}).topics_per_worker == 10
    assert QueueModuleSettings.parse({}).topics_per_worker == 2500
    assert QueueModuleSettings.parse({"max_topics": 40}).topics_per_worker == 40  # a small bound: all of it


async def test_two_workers_past_their_shares_leave_a_third_its_share() -> None:
    """A hard share (re-attack on 1bde0cfb, A1: a worker past its share while a share stayed free let two workers
    take every topic: 40 topics, shares of 10, A 30, B 10, C 0, and the engine's own enqueue refused)."""
    async with queue_engine(max_topics=40, max_topics_per_worker=10) as (engine, _module), \
            ModuleWorker(engine.url) as a, ModuleWorker(engine.url) as b, ModuleWorker(engine.url) as c:
        for name, worker in (("a", a), ("b", b), ("c", c)):
            await worker.function(f"{name}::h", _nothing)
            for i in range(40 if name != "c" else 10):
                await worker.trigger(f"{name}{i}", "queue", f"{name}::h", {"topic": f"{name}-{i}"})
        topics = await _topics(a)
        assert [sum(t.startswith(f"{n}-") for t in topics) for n in "abc"] == [10, 10, 10]
        assert await engine.invoke("enqueue", {"topic": "engine-own", "data": 1}) is None
