"""The engine's own stream and state stores chosen by configuration: store_url, KvStore (memory and file),
RedisAdapter — with events reaching socket clients through the store's pub/sub."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_streams import MemoryStream, RedisStream, SQLStream
from tests.services import require_redis

from .helpers import SocketClient, Worker, engine_config, stream_module

pytestmark = pytest.mark.our_engine("configures our engine's stream stores")


async def roundtrip(engine: Engine, stream: str) -> None:
    worker = await Worker.connect(engine.url)
    client = await SocketClient.connect(engine)
    await client.join("j", stream, "g:1")
    assert (await client.recv())["event"] == {"type": "sync", "data": []}
    data = {"big": 2**70, "a": [], "ü": 1}
    item = {"stream_name": stream, "group_id": "g:1", "item_id": "i"}
    assert await worker.result("stream::set", {**item, "data": data}) == {"old_value": None, "new_value": data}
    assert (await client.recv())["event"] == {"type": "create", "data": data}
    update = await worker.result("stream::update", {**item, "ops": [{"type": "increment", "path": "n", "by": 1}]})
    assert update["new_value"] == {**data, "n": 1}
    assert (await client.recv())["event"]["type"] == "update"
    assert await worker.result("stream::list_groups", {"stream_name": stream}) == ["g:1"]
    assert await worker.result("stream::delete", item) == {"old_value": {**data, "n": 1}}
    assert (await client.recv())["event"]["type"] == "delete"
    # a scope named after the stream: on a shared Redis a fixed one ("sc") is another test's key too
    scope = f"{stream}-sc"
    await worker.result("state::set", {"scope": scope, "key": "k", "value": 1})
    assert await worker.result("state::get", {"scope": scope, "key": "k"}) == 1
    await worker.result("state::delete", {"scope": scope, "key": "k"})
    await client.close()
    await worker.close()


async def test_default_store_is_memory(engine: Engine) -> None:
    assert isinstance(stream_module(engine).store, MemoryStream)
    await roundtrip(engine, "mem")


async def test_store_url_sqlite_persists_across_engines(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'engine.db'}"
    async with Engine(config=engine_config(store_url=url)) as engine:
        assert isinstance(stream_module(engine).store, SQLStream)
        await roundtrip(engine, "sql")
        worker = await Worker.connect(engine.url)
        await worker.result("stream::set", {"stream_name": "keep", "group_id": "g", "item_id": "i", "data": 7})
        await worker.close()
    async with Engine(config=engine_config(store_url=url)) as engine:
        worker = await Worker.connect(engine.url)
        assert await worker.result("stream::get", {"stream_name": "keep", "group_id": "g", "item_id": "i"}) == 7
        await worker.close()


async def test_kvstore_file_based_persists(tmp_path: Path) -> None:
    settings: dict[str, Any] = {"adapter": {"class": "modules::stream::adapters::KvStore",
                                            "config": {"store_method": "file_based", "file_path": str(tmp_path)}}}
    for expected in (None, 5):
        async with Engine(config=engine_config(**settings)) as engine:
            worker = await Worker.connect(engine.url)
            item = {"stream_name": "f", "group_id": "g", "item_id": "i"}
            frame = await worker.call("stream::get", item)
            assert frame.get("result") == expected
            await worker.result("stream::set", {**item, "data": 5})
            await worker.close()
    assert (tmp_path / "iii_stream.sqlite3").exists()


async def test_unknown_stream_setting_fails_the_module() -> None:
    async with Engine(config=engine_config(prot=1), allow_degraded=True) as engine:
        assert engine.module("stream") is None
        assert "unknown key 'prot'" in engine.unavailable_modules["modules::stream::StreamModule"]


@pytest.mark.redis
async def test_redis_adapter_store_and_cross_engine_fan_out() -> None:
    redis_url = require_redis()
    stream = f"iii-engine-test-{uuid.uuid4().hex}"
    adapter = {"adapter": {"class": "modules::stream::adapters::RedisAdapter", "config": {"redis_url": redis_url}}}
    state_cfg = {"adapter": {"class": "modules::state::adapters::RedisAdapter", "config": {"redis_url": redis_url}}}

    def config() -> EngineConfig:
        base = engine_config(**adapter)
        modules = [ModuleSpec(m.class_name, state_cfg) if m.class_name == "modules::state::StateModule" else m
                   for m in base.modules or []]
        return EngineConfig(host="127.0.0.1", port=0, modules=modules)

    import redis.asyncio as aioredis

    raw = aioredis.Redis.from_url(redis_url)
    try:
        async with Engine(config=config()) as writer_engine, Engine(config=config()) as reader_engine:
            assert isinstance(stream_module(writer_engine).store, RedisStream)
            await roundtrip(writer_engine, stream)
            # a client of another engine sharing the Redis sees this engine's changes (stream::events pub/sub)
            client = await SocketClient.connect(reader_engine)
            await client.join("x", stream, "g")
            await client.recv()
            worker = await Worker.connect(writer_engine.url)
            await worker.result("stream::set", {"stream_name": stream, "group_id": "g", "item_id": "i", "data": 1})
            frame = await client.recv()
            assert (frame["streamName"], frame["event"]) == (stream, {"type": "create", "data": 1})
            assert await raw.hget(f"stream:{stream}:g", "i") == b"1"  # production layout
            await worker.close()
            await client.close()
    finally:
        keys = [k async for k in raw.scan_iter(match=f"stream:{stream}:*")]
        keys += [k async for k in raw.scan_iter(match=f"state:{stream}-sc")]
        if keys:
            await raw.delete(*keys)
        await raw.aclose()


async def test_cli_stream_store_option(engine_process: Any, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    proc = await engine_process("--stream-store", url, "--config", str(_free_port_config(tmp_path)))
    worker = await Worker.connect(proc.url)
    await worker.result("stream::set", {"stream_name": "cli", "group_id": "g", "item_id": "i", "data": [1]})
    await worker.close()
    async with SQLStream.from_url(url) as store:
        assert await store.list_all() == [("cli", ["g"])]


def _free_port_config(tmp_path: Path) -> Path:
    path = tmp_path / "engine.yaml"
    path.write_text("modules:\n"
                    "  - class: modules::stream::StreamModule\n    config: {host: 127.0.0.1, port: 0}\n"
                    "  - class: modules::state::StateModule\n")
    return path
