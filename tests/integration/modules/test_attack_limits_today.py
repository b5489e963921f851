"""Attacks on the queue bounds (f9c9717): ways past ``max_jobs``, settings the refusals named but nobody could set,
and a refused ``queue`` trigger leaving half a subscription.

Each test names what it broke before the fix beside it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.base import EngineError
from iii_engine.modules.queue.module import TOPIC_PREFIX, QueueModule
from iii_engine.modules.queue.store import DeadLetter
from tests.unit.modules.test_queue_store import dead_letters, held

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("configures queue limits")]

QUEUE = "modules::queue::QueueModule"
REDIS_URL = "redis://127.0.0.1:6379/0"
Q = "__fn_queue::q"


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    settings = {"queue_configs": {"small": {"max_jobs": 2}}, "max_topics": 2, "max_topic_jobs": 2}
    config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(QUEUE, settings)])
    async with Engine(config=config) as running:
        yield running


def _queue(engine: Engine) -> QueueModule:
    module = engine.modules["queue"]
    assert isinstance(module, QueueModule)
    return module


async def test_max_topic_jobs_bounds_every_topic_and_the_refusal_names_it(engine: Engine) -> None:
    # before: a topic's bound was the built-in 100,000 and the refusal named "(max_jobs)", a setting no topic had
    async with ModuleWorker(engine.url) as worker:
        replies = [await worker.call("enqueue", {"topic": "t", "data": i}) for i in range(3)]
        assert ["error" in reply for reply in replies] == [False, False, True]
        assert replies[2]["error"] == {"code": "enqueue_error", "message": "Topic 't' is full: it holds 2 jobs "
                                       "waiting, delayed or running (max_topic_jobs)"}
        # its first subscriber's queue_config shapes the topic, but may not raise the operator's bound
        await worker.function("w::f", _never)
        await worker.trigger("sub", "queue", "w::f", {"topic": "u", "queue_config": {"maxJobs": 10**9}})
        assert _queue(engine)._topics["u"].consumer.settings.max_jobs == 2


async def _never(data: Any) -> Any:
    await asyncio.Event().wait()


async def test_a_redrive_into_a_full_topic_is_refused_naming_the_setting_and_keeps_the_letters(
        engine: Engine) -> None:
    # before: the redrive succeeded and the topic held 4 jobs of max 2
    module = _queue(engine)
    async with ModuleWorker(engine.url) as worker:
        assert await worker.result("enqueue", {"topic": "t", "data": 0}) is None  # makes the topic (no subscriber)
        queue = TOPIC_PREFIX + "t"
        first = (await module.store.claim(queue, now_ms=0, lease_ms=1000))
        assert first is not None
        await module.store.dead(queue, DeadLetter(first, "boom", 0))
        for i in range(2):
            assert await worker.result("enqueue", {"topic": "t", "data": i}) is None
        reply = await worker.call("iii::queue::redrive", {"queue": "t"})
        assert reply["error"] == {"code": "redrive_failed", "message": "Failed to redrive DLQ for queue 't': Topic "
                                  "'t' is full: it holds 2 jobs waiting, delayed or running (max_topic_jobs); 0 "
                                  "moved, the rest stay in the DLQ"}
        reply = await worker.call("iii::queue::redrive_message", {"queue": "t", "message_id": first.id})
        assert reply["error"]["message"].startswith("Failed to handle DLQ message for queue 't': Topic 't' is full")
        assert await held(module.store, queue) == (2, 1)


async def test_a_queue_trigger_moved_to_a_topic_past_max_topics_keeps_its_subscription(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    # before: the module dropped the trigger's subscription before refusing the new topic, while the engine kept
    # the trigger's earlier registration: listed as subscribed to "a", it never got a job again
    got: asyncio.Queue[Any] = asyncio.Queue()

    async def handler(data: Any) -> None:
        await got.put(data)

    async with ModuleWorker(engine.url) as worker:
        await worker.function("w::f", handler)
        await worker.trigger("sub", "queue", "w::f", {"topic": "a"})
        assert await worker.result("enqueue", {"topic": "b", "data": 0}) is None  # the second and last topic
        await worker.trigger("sub", "queue", "w::f", {"topic": "c"})
        assert "Topic 'c' refused: the queue module keeps 2 topics (max_topics 2)" in caplog.text
        assert engine.registry.triggers["sub"].config == {"topic": "a"}
        assert await worker.result("enqueue", {"topic": "a", "data": "still here"}) is None
        assert await asyncio.wait_for(got.get(), 5) == "still here"
        assert sorted(_queue(engine)._topics) == ["a", "b"]


async def test_a_full_named_queue_refuses_a_redrive_naming_its_queue_config(engine: Engine) -> None:
    module = _queue(engine)
    consumer = module._named["small"]
    await consumer.stop()  # nothing claims: the test moves jobs itself
    await dead_letters(module.store, consumer.queue, 1)
    for i in range(2):
        await module.enqueue("small", "nobody::home", {"i": i})
    with pytest.raises(EngineError) as refused:
        await engine.invoke("iii::queue::redrive", {"queue": "small"})
    assert (refused.value.code, refused.value.message) == (
        "redrive_failed", "Failed to redrive DLQ for queue 'small': Queue 'small' is full: it holds 2 jobs waiting, "
                          "delayed or running (queue_configs.small.max_jobs); 0 moved, the rest stay in the DLQ")
