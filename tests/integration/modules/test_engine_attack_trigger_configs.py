"""Attack Q-E: state, subscribe, cron, stream and queue triggers whose config fields have the wrong JSON type (or,
for a queue trigger, no topic, or a named queue's name for one)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec
from tests.polling import until

pytestmark = pytest.mark.our_engine("reads the engine's log of refused triggers")

BAD = {
    "qe-scope-int": ("state", {"scope": 0}, "'scope' must be a string, got int 0"),
    "qe-scope-list": ("state", {"scope": ["s"]}, "'scope' must be a string, got list"),
    "qe-key-object": ("state", {"scope": "s", "key": {"k": 1}}, "'key' must be a string, got dict"),
    "qe-config-text": ("state", "s", "config must be an object, got str"),
    "qe-condition-int": ("state", {"scope": "s", "condition_function_id": 7},
                         "'condition_function_id' must be a string, got int 7"),
    "qe-topic-int": ("subscribe", {"topic": 5}, "'topic' must be a string, got int 5"),
    "qe-cron-condition": ("cron", {"expression": "* * * * * *", "condition_function_id": ["x"]},
                          "'condition_function_id' must be a string, got list"),
    "qe-stream-group-int": ("stream", {"stream_name": "st", "group_id": 0}, "'group_id' must be a string, got int 0"),
    "qe-stream-item-list": ("stream", {"stream_name": "st", "item_id": ["i"]}, "'item_id' must be a string, got list"),
    "qe-join-group-int": ("stream:join", {"group_id": 3}, "'group_id' must be a string, got int 3"),
    "qe-leave-config-text": ("stream:leave", "st", "config must be an object, got str"),
}
QUEUE_BAD = {  # (a test of their own: the engine logs 10 refused triggers per 10 s one line each, then counts)
    # before: registered and listed, subscribing nothing (a warning in the engine's log alone)
    "qe-queue-no-topic": ("queue", {}, "'topic' must be a non-empty string"),
    "qe-queue-empty-topic": ("queue", {"topic": ""}, "'topic' must be a non-empty string"),
    "qe-queue-topic-int": ("queue", {"topic": 5}, "'topic' must be a string, got int 5"),
    "qe-queue-config-text": ("queue", "t", "config must be an object, got str"),
    # before: subscribed, its dead letters out of reach of every console function (the named queue answered)
    "qe-queue-named": ("queue", {"topic": "named"}, "topic 'named' has the name of a named queue (queue_configs)"),
}


async def test_mistyped_filters_are_refused_naming_the_field(caplog: pytest.LogCaptureFixture) -> None:
    # before: {"scope": 0} and a text config were read as "no filter" (every change of every scope), a list scope
    # as one matching nothing, a number condition was ignored, and all of them were listed as registered
    caplog.set_level(logging.WARNING, logger="iii_engine")
    modules = [ModuleSpec(f"modules::{name}", {}) for name in
               ("state::StateModule", "pubsub::PubSubModule", "cron::CronModule", "stream::StreamModule")]
    got: asyncio.Queue[Any] = asyncio.Queue()
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=modules)) as engine, \
            ModuleWorker(engine.url) as worker:
        await worker.function("qe::on", got.put)
        await _register(worker, BAD)
        await worker.trigger("qe-ok", "state", "qe::on", {"scope": "s"})  # last: fired after any other
        listed = [t["id"] for t in (await worker.result("engine::triggers::list", {}))["triggers"]]
        assert listed == ["qe-ok"]
        await worker.result("state::set", {"scope": "s", "key": "k", "value": 1})
        assert (await asyncio.wait_for(got.get(), 5))["scope"] == "s"
        assert got.empty(), got.get_nowait()
    _assert_refused(caplog, BAD)


async def test_queue_triggers_with_no_topic_of_their_own_are_refused(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="iii_engine")
    modules = [ModuleSpec("modules::queue::QueueModule", {"queue_configs": {"named": {}}})]
    got: asyncio.Queue[Any] = asyncio.Queue()
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=modules)) as engine, \
            ModuleWorker(engine.url) as worker:
        await worker.function("qe::on", got.put)
        await _register(worker, QUEUE_BAD)
        await worker.trigger("qe-ok", "queue", "qe::on", {"topic": "t"})
        listed = [t["id"] for t in (await worker.result("engine::triggers::list", {}))["triggers"]]
        assert listed == ["qe-ok"]
        assert await worker.result("enqueue", {"topic": "t", "data": 1}) is None
        assert await asyncio.wait_for(got.get(), 5) == 1
        # before: taken, into a topic no trigger may subscribe to
        refused = await worker.call("enqueue", {"topic": "named", "data": 1})
        assert refused["error"]["code"] == "enqueue_error", refused
        assert "has the name of a named queue" in refused["error"]["message"]
    _assert_refused(caplog, QUEUE_BAD)


async def _register(worker: ModuleWorker, bad: dict[str, tuple[str, Any, str]]) -> None:
    for trigger_id, (kind, config, _) in bad.items():
        await worker.trigger(trigger_id, kind, "qe::on", config)


def _assert_refused(caplog: pytest.LogCaptureFixture, bad: dict[str, tuple[str, Any, str]]) -> None:
    """Each of ``bad`` was refused, the engine's line naming the trigger and why."""
    lines = [r.getMessage() for r in caplog.records if "invalid_trigger_config" in r.getMessage()]
    for trigger_id, (_, _, reason) in bad.items():
        assert any(f"trigger {trigger_id} " in line and reason in line for line in lines), (trigger_id, lines)


async def test_a_condition_failing_on_every_change_is_a_burst_of_lines_and_a_count(
        caplog: pytest.LogCaptureFixture) -> None:
    """Attack on triggers: a condition failing on every change wrote a line per change (2,000 in 0.4 s)."""
    caplog.set_level(logging.WARNING, logger="iii_engine")
    called = asyncio.Event()
    conditions = 0

    async def failing(data: Any) -> Any:
        nonlocal conditions
        conditions += 1
        if conditions == 30:
            called.set()
        raise RuntimeError("condition broke")

    async def handler(data: Any) -> Any:
        raise AssertionError("skipped triggers must not run")

    engine_config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec("modules::state::StateModule", {})])
    async with Engine(config=engine_config) as engine:
        async with ModuleWorker(engine.url) as worker:
            await worker.function("qe::cond", failing)
            await worker.function("qe::on", handler)
            await worker.trigger("qe-cond", "state", "qe::on", {"scope": "s", "condition_function_id": "qe::cond"})
            for n in range(30):
                await worker.result("state::set", {"scope": "s", "key": "k", "value": n})
            await asyncio.wait_for(called.wait(), 10)
            await until(lambda: sum("condition qe::cond failed" in r.getMessage() for r in caplog.records) >= 10)
    # the engine's stop writes the count of those past the burst
    lines = [r.getMessage() for r in caplog.records if "qe::cond" in r.getMessage() or "condition(s) failed" in
             r.getMessage()]
    one_by_one = [line for line in lines if line.startswith("condition qe::cond failed (invocation_failed: ")]
    counted = [int(line.split()[0]) for line in lines if "more trigger condition(s) failed" in line]
    assert len(one_by_one) == 10, lines  # before: 30
    assert sum(counted) == 20, lines  # none lost from the log, none twice
