"""Queue bounds: a queue holds at most ``max_jobs`` jobs and the module at most ``max_topics`` topics; past either an
enqueue fails with an error naming the queue and the setting (before: both grew without end)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.settings import ConfigError

pytestmark = pytest.mark.our_engine("configures queue limits")

QUEUE = "modules::queue::QueueModule"


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    settings = {"queue_configs": {"small": {"max_jobs": 2}}, "max_topics": 2}
    config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(QUEUE, settings)])
    async with Engine(config=config) as running:
        yield running


async def test_a_full_named_queue_refuses_the_enqueue_naming_the_setting(engine: Engine) -> None:
    async with ModuleWorker(engine.url) as worker:
        # nobody serves "nobody::home": its jobs wait in the queue
        replies = [await worker.call("nobody::home", {"i": i}, action={"type": "enqueue", "queue": "small"})
                   for i in range(3)]
        assert ["error" in reply for reply in replies] == [False, False, True]
        assert replies[2]["error"] == {"code": "enqueue_error", "message": "Queue 'small' is full: it holds 2 jobs "
                                       "waiting, delayed or running (queue_configs.small.max_jobs)"}
        stats = await worker.result("engine::queue::topic_stats", {"topic": "small"})
        assert stats["waiting"] + stats["active"] + stats["delayed"] == 2


async def test_topics_past_max_topics_are_refused_and_a_known_topic_still_takes_jobs(engine: Engine) -> None:
    async with ModuleWorker(engine.url) as worker:
        for topic in ("a", "b"):
            assert await worker.result("enqueue", {"topic": topic, "data": 1}) is None
        third = await worker.call("enqueue", {"topic": "c", "data": 1})
        assert third["error"] == {"code": "enqueue_error",
                                  "message": "Topic 'c' refused: the queue module keeps 2 topics (max_topics 2), "
                                             "each with jobs or subscribers"}
        assert await worker.result("enqueue", {"topic": "a", "data": 2}) is None
        topics = await worker.result("engine::queue::list_topics", {})
        assert [t["topic"] for t in topics["topics"]] == ["small", "a", "b"]


async def test_topics_nobody_uses_any_more_make_room_under_max_topics(engine: Engine) -> None:
    """At max_topics, topics with no subscriber and no job left are forgotten, so new topics are taken again
    (before: refused until the engine restarted, however many topics had gone quiet)."""
    handled: dict[str, asyncio.Event] = {"a": asyncio.Event(), "b": asyncio.Event()}

    async def handle(data: Any) -> None:
        handled[data["topic"]].set()

    async with ModuleWorker(engine.url) as worker:
        await worker.function("sub::handle", handle)
        for topic in ("a", "b"):
            await worker.trigger(f"t-{topic}", "queue", "sub::handle", {"topic": topic})
            assert await worker.result("enqueue", {"topic": topic, "data": {"topic": topic}}) is None
            await asyncio.wait_for(handled[topic].wait(), 10)
        await worker.trigger("t-busy", "queue", "sub::handle", {"topic": "a"})  # a subscriber keeps "a"
        await worker.send({"type": "unregistertrigger", "id": "t-a", "trigger_type": "queue"})
        await worker.send({"type": "unregistertrigger", "id": "t-b", "trigger_type": "queue"})
        await worker.sync()
        assert await worker.result("enqueue", {"topic": "c", "data": {"topic": "c"}}) is None
        topics = await worker.result("engine::queue::list_topics", {})
        assert [t["topic"] for t in topics["topics"]] == ["small", "a", "c"]  # "b" was forgotten, "a" kept
        refused = await worker.call("enqueue", {"topic": "d", "data": 1})  # "a" is subscribed, "c" holds a job
        assert refused["error"]["message"] == ("Topic 'd' refused: the queue module keeps 2 topics (max_topics 2), "
                                               "each with jobs or subscribers")
        stats = await worker.result("engine::queue::topic_stats", {"topic": "c"})
        assert stats["waiting"] == 1


def test_bad_limits_fail_the_start_naming_the_key() -> None:
    from iii_engine.modules.queue.settings import QueueModuleSettings
    with pytest.raises(ConfigError, match=r"queue_configs\.small\.max_jobs: must be >= 1, got 0"):
        QueueModuleSettings.parse({"queue_configs": {"small": {"max_jobs": 0}}})
    with pytest.raises(ConfigError, match=r"max_topics: must be >= 1, got 0"):
        QueueModuleSettings.parse({"max_topics": 0})
