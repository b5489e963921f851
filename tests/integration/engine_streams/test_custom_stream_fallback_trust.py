"""Issue #8: a stream that a worker served through ``create_stream`` never falls back silently to the engine's own
store while that worker is gone; ``custom_stream_fallback: true`` restores production's fallback."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from iii.stream import StreamGetInput
from iii_engine import Engine, ModuleSpec
from iii_engine.modules.base import EngineError
from iii_engine.modules.stream.settings import StreamSettings
from iii_engine.settings import ConfigError
from tests.conftest import engine_test_config

from .helpers import registered, stream_module
from .test_custom_backends import serving

pytestmark = pytest.mark.our_engine("configures our stream module's custom_stream_fallback")

OPS = ("get", "set", "update", "delete", "list", "list_groups", "send")


def payload(op: str, name: str) -> dict[str, Any]:
    item = {"stream_name": name, "group_id": "g", "item_id": "i"}
    payloads: dict[str, dict[str, Any]] = {"get": item, "set": {**item, "data": {"n": 1}}, "delete": item,
            "update": {**item, "ops": [{"type": "increment", "path": "n", "by": 1}]},
            "list": {"stream_name": name, "group_id": "g"}, "list_groups": {"stream_name": name},
            "send": {"stream_name": name, "group_id": "g", "type": "ping", "data": 1}}
    return payloads[op]


@asynccontextmanager
async def engine_with(**stream_settings: Any) -> AsyncIterator[Engine]:
    config = engine_test_config()
    assert config.modules is not None
    modules = [ModuleSpec(m.class_name, {**m.config, **stream_settings})
               if m.class_name == "modules::stream::StreamModule" else m for m in config.modules]
    async with Engine(config=config.with_overrides(modules=modules)) as running:
        yield running


@asynccontextmanager
async def served_by_worker(engine: Engine, name: str) -> AsyncIterator[None]:
    """Our SDK serving ``name`` (a dict store) in a worker process; on exit, wait until the engine dropped it."""
    gone = asyncio.Event()
    engine.add_worker_listener(lambda event, _id: gone.set() if event == "worker_disconnected" else None)
    async with serving(sys.executable, engine.url, name, "dict"):
        for op in ("get", "set", "delete", "list", "list_groups", "update"):
            await registered(engine, f"stream::{op}({name})")
        yield
    await asyncio.wait_for(gone.wait(), 10)
    assert not engine.has_function(f"stream::get({name})")


async def call(engine: Engine, op: str, name: str) -> Any:
    return await engine.invoke(f"stream::{op}", payload(op, name))


async def assert_unavailable(engine: Engine, name: str) -> None:
    for op in OPS:
        with pytest.raises(EngineError) as caught:
            await call(engine, op, name)
        assert caught.value.code == "stream_unavailable", (op, caught.value)
        assert repr(name) in caught.value.message and "worker" in caught.value.message, caught.value.message


async def test_served_stream_fails_while_its_worker_is_gone_and_recovers() -> None:
    name = f"custom-{uuid.uuid4().hex[:8]}"
    async with engine_with() as engine:
        store = stream_module(engine).store
        assert store is not None
        async with served_by_worker(engine, name):
            pass  # registered and gone without a single call: the engine must still remember it
        await assert_unavailable(engine, name)
        async with served_by_worker(engine, name):
            assert await call(engine, "set", name) == {"old_value": None, "new_value": {"n": 1}}
            assert await call(engine, "get", name) == {"n": 1}
        await assert_unavailable(engine, name)
        # nothing reached the engine's own store
        assert await store.get(StreamGetInput(stream_name=name, group_id="g", item_id="i")) is None
        assert name not in [s for s, _ in await store.list_all()]
        # a stream no worker ever served still uses the engine's store
        other = f"plain-{uuid.uuid4().hex[:8]}"
        assert await call(engine, "set", other) == {"old_value": None, "new_value": {"n": 1}}


async def test_fallback_setting_restores_the_engine_store() -> None:
    name = f"custom-{uuid.uuid4().hex[:8]}"
    async with engine_with(custom_stream_fallback=True) as engine:
        store = stream_module(engine).store
        assert store is not None
        async with served_by_worker(engine, name):
            assert await call(engine, "set", name) == {"old_value": None, "new_value": {"n": 1}}
        assert await call(engine, "get", name) is None  # the engine's store, not the worker's
        assert await call(engine, "set", name) == {"old_value": None, "new_value": {"n": 1}}
        assert await store.get(StreamGetInput(stream_name=name, group_id="g", item_id="i")) == {"n": 1}


async def test_declared_custom_stream_fails_before_any_worker_registers_it() -> None:
    name = f"declared-{uuid.uuid4().hex[:8]}"
    async with engine_with(custom_streams=[name]) as engine:
        await assert_unavailable(engine, name)  # e.g. right after an engine restart, before the worker is back
        async with served_by_worker(engine, name):
            assert await call(engine, "list_groups", name) == []


def test_fallback_settings_are_checked() -> None:
    assert StreamSettings.parse({"custom_stream_fallback": True}).custom_stream_fallback is True
    assert StreamSettings.parse({}).custom_stream_fallback is False
    assert StreamSettings.parse({"custom_streams": ["a", "b:c"]}).custom_streams == {"a", "b:c"}
    with pytest.raises(ConfigError, match=r"^custom_stream_fallback: must be true or false, got 'yes'$"):
        StreamSettings.parse({"custom_stream_fallback": "yes"})
    with pytest.raises(ConfigError, match=r"^custom_streams: must be a list, got 'todos'$"):
        StreamSettings.parse({"custom_streams": "todos"})
