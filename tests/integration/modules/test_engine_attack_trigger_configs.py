"""Attack Q-E: state, subscribe, cron and stream triggers whose config fields have the wrong JSON type."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii_engine import Engine, EngineConfig, ModuleSpec

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
        for trigger_id, (kind, config, _) in BAD.items():
            await worker.trigger(trigger_id, kind, "qe::on", config)
        await worker.trigger("qe-ok", "state", "qe::on", {"scope": "s"})  # last: fired after any other
        listed = [t["id"] for t in (await worker.result("engine::triggers::list", {}))["triggers"]]
        assert listed == ["qe-ok"]
        await worker.result("state::set", {"scope": "s", "key": "k", "value": 1})
        assert (await asyncio.wait_for(got.get(), 5))["scope"] == "s"
        assert got.empty(), got.get_nowait()
    lines = [r.getMessage() for r in caplog.records if "invalid_trigger_config" in r.getMessage()]
    for trigger_id, (_, _, reason) in BAD.items():
        assert any(f"trigger {trigger_id} " in line and reason in line for line in lines), (trigger_id, lines)
