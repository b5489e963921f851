"""Unit tests of the stream/state module parts: settings, store selection, input parsing, locks, trigger matching,
and the stream functions over a stub engine."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from iii.iii_types import TriggerInfo
from iii_engine.modules.base import BuiltinFunction, EngineError, InvocationContext
from iii_engine.modules.stream.api import StreamFunctions
from iii_engine.modules.stream.inputs import Fields
from iii_engine.modules.stream.locks import KeyedLocks
from iii_engine.modules.stream.settings import StreamSettings
from iii_engine.modules.stream.store import open_module_store
from iii_engine.modules.stream.triggers import JoinLeaveTriggers, StreamTriggers, matches_stream_trigger
from iii_engine.settings import ConfigError
from iii_streams import MemoryStream, RedisStream, SQLStream


class Stub:
    """Just enough of EngineServices: worker functions are Python coroutines; calls are recorded."""

    def __init__(self) -> None:
        self.log = logging.getLogger("tests.stream_parts")
        self.functions: dict[str, Any] = {}
        self.invoked: list[tuple[str, Any]] = []

    def register_function(self, function: BuiltinFunction) -> None:
        pass

    def has_function(self, function_id: str) -> bool:
        return function_id in self.functions

    async def invoke(self, function_id: str, data: Any, *, timeout_s: float | None = None) -> Any:
        self.invoked.append((function_id, data))
        if function_id not in self.functions:
            raise EngineError("function_not_found", f"Function {function_id} not found")
        return await self.functions[function_id](data)

    async def invoke_when_free(self, function_id: str, data: Any, *, until: float | None = None) -> Any:
        return await self.invoke(function_id, data)

    async def condition_passes(self, condition_function_id: str | None, payload: Any, *,
                               wait_if_busy: bool = True, busy_until: float | None = None,
                               hold_place: bool = False) -> bool:
        return not condition_function_id or await self.invoke(condition_function_id, payload) is not False


CTX = InvocationContext()


def test_settings_defaults_and_errors() -> None:
    settings = StreamSettings.parse({})
    assert (settings.port, settings.auth_function, settings.auth_reject) == (3112, None, False)
    with pytest.raises(ConfigError, match=r"^port: must be an integer, got '80'$"):
        StreamSettings.parse({"port": "80"})
    with pytest.raises(ConfigError, match=r"^client_queue_size: must be >= 1, got 0$"):
        StreamSettings.parse({"client_queue_size": 0})
    with pytest.raises(ConfigError, match=r"^unknown key 'prot' \(allowed: adapter, auth_function"):
        StreamSettings.parse({"prot": 1})
    parsed = StreamSettings.parse({"store_url": "memory://", "port": 1})
    assert (parsed.store_url, parsed.adapter, parsed.port) == ("memory://", None, 1)


def test_store_selection(tmp_path: Path) -> None:
    assert isinstance(open_module_store("stream", {}), MemoryStream)
    redis = open_module_store("stream", {"adapter": {"class": "modules::stream::adapters::RedisAdapter",
                                                     "config": {"redis_url": "redis://127.0.0.1:1/0"}}})
    assert isinstance(redis, RedisStream) and not redis.publish_events
    sql = open_module_store("state", {"store_url": f"sqlite:///{tmp_path / 'x.db'}"})
    assert isinstance(sql, SQLStream) and not sql.publish_events
    with pytest.raises(ConfigError, match=r"^adapter.class: unknown adapter class 'nope'"):
        open_module_store("stream", {"adapter": {"class": "nope"}})
    with pytest.raises(ConfigError, match=r"^adapter.config: unknown key 'colour'"):
        open_module_store("stream", {"adapter": {"class": "modules::stream::adapters::KvStore",
                                                 "config": {"colour": 1}}})
    with pytest.raises(ConfigError, match=r"^store_url: unsupported stream URL scheme"):
        open_module_store("stream", {"store_url": "ftp://x"})


def test_fields_errors_name_the_field() -> None:
    with pytest.raises(EngineError) as info:
        Fields("stream::set", {"stream_name": True}).text("stream_name")
    assert info.value.code == "deserialization_error"
    assert info.value.message.endswith("invalid type: boolean `true`, expected a string (field `stream_name`)")
    assert Fields("x", {"id": None}).optional_text("id") is None
    assert [op.type for op in Fields("x", {"ops": [{"type": "merge", "value": {}}]}).ops()] == ["merge"]


async def test_keyed_locks_serialise_one_key_only() -> None:
    locks = KeyedLocks()
    order: list[str] = []
    entered = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with locks.hold("a"):
            entered.set()
            await release.wait()
            order.append("first")

    async def waiter() -> None:
        async with locks.hold("a"):
            order.append("second")

    task = asyncio.create_task(holder())
    await entered.wait()
    second = asyncio.create_task(waiter())
    async with locks.hold("b"):  # another key is free
        order.append("other")
    release.set()
    await asyncio.gather(task, second)
    assert order == ["other", "first", "second"]
    assert len(locks) == 0


def test_trigger_matching() -> None:
    event = {"streamName": "s", "groupId": "g", "id": "i"}
    assert matches_stream_trigger({"stream_name": "s"}, event)
    assert not matches_stream_trigger({"stream_name": "t"}, event)
    assert not matches_stream_trigger({"stream_name": "s", "group_id": "h"}, event)
    assert matches_stream_trigger({"stream_name": "s", "group_id": "g", "item_id": "i"}, event)
    assert JoinLeaveTriggers.refuses({"unauthorized": True})
    assert not JoinLeaveTriggers.refuses({"unauthorized": 1}) and not JoinLeaveTriggers.refuses(None)


async def test_stream_trigger_without_stream_name_raises() -> None:
    triggers = StreamTriggers(Stub())  # type: ignore[arg-type]
    with pytest.raises(EngineError, match="stream_name"):
        await triggers.register(TriggerInfo(id="t", trigger_type="stream", function_id="f", config={}))


async def test_composed_update_calls_custom_set_directly_and_publishes_once() -> None:
    services = Stub()
    stored: dict[str, Any] = {"i": {"n": 1}}

    async def get(req: Any) -> Any:
        return stored.get(req["item_id"])

    async def set_(req: Any) -> Any:
        stored[req["item_id"]] = req["data"]
        return {"new_value": req["data"]}

    services.functions = {"stream::get(c)": get, "stream::set(c)": set_}
    store = MemoryStream(publish_events=False)
    functions = StreamFunctions(services, store, StreamTriggers(services))  # type: ignore[arg-type]
    async with store.watch() as events:
        result = await functions.update({"stream_name": "c", "group_id": "g", "item_id": "i",
                                         "ops": [{"type": "increment", "path": "n", "by": 2}]}, CTX)
        event = await asyncio.wait_for(anext(events), 2)
    assert result == {"old_value": {"n": 1}, "new_value": {"n": 3}}
    assert [fid for fid, _ in services.invoked] == ["stream::get(c)", "stream::set(c)"]
    assert event["event"] == {"type": "update", "data": {"n": 3}}
    assert await store.list_all() == []  # nothing landed in the engine's store


async def test_store_failure_maps_to_stream_error_code() -> None:
    class Broken(MemoryStream):
        async def set(self, input: Any) -> Any:
            raise ConnectionError("store is down")

    services = Stub()
    functions = StreamFunctions(services, Broken(publish_events=False), StreamTriggers(services))  # type: ignore[arg-type]
    with pytest.raises(EngineError) as info:
        await functions.set({"stream_name": "s", "group_id": "g", "item_id": "i", "data": 1}, CTX)
    assert (info.value.code, info.value.message) == ("STREAM_SET_ERROR", "store is down")


@pytest.mark.parametrize("atomic", [True, False])
async def test_updates_of_one_item_reach_an_atomic_store_together(atomic: bool) -> None:
    """An atomic store (``atomic_updates``) sees concurrent updates of one item at once, so it can group-commit
    them; any other store gets them one at a time behind the engine's per-item lock."""
    inside, most = 0, 0
    release = asyncio.Event()

    class Counting(MemoryStream):
        atomic_updates = atomic

        async def update(self, input: Any, **options: Any) -> Any:
            nonlocal inside, most
            inside += 1
            most = max(most, inside)
            if most >= 4 or not atomic:
                release.set()
            await release.wait()
            inside -= 1
            return await super().update(input)

    services = Stub()
    functions = StreamFunctions(services, Counting(publish_events=False), StreamTriggers(services))  # type: ignore[arg-type]
    increment = {"type": "increment", "path": "n", "by": 1}
    request = {"stream_name": "s", "group_id": "g", "item_id": "i", "ops": [increment]}
    results = await asyncio.wait_for(asyncio.gather(*(functions.update(dict(request), CTX) for _ in range(4))), 5)
    assert sorted(r["new_value"]["n"] for r in results) == [1, 2, 3, 4]
    assert most == (4 if atomic else 1)
