"""The engine's stream and state modules on a private redis-server: state in the production layout
(``state:<scope>``, shared with raw redis-py both ways, exact scope listing) and a Redis restart while the stream
module is in use (errors while down, everything works again after, nothing half-written)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from websockets.exceptions import ConnectionClosed

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_streams import RedisStream
from tests.integration.streams.private_redis import PrivateRedis

from .helpers import SocketClient, Worker, engine_config, stream_module

pytestmark = [pytest.mark.redis, pytest.mark.our_engine("starts our engine on a private Redis it restarts")]


def redis_engine_config(redis_url: str) -> EngineConfig:
    """Default modules with the stream and state modules on production ``RedisAdapter`` stores."""
    stream = {"adapter": {"class": "modules::stream::adapters::RedisAdapter", "config": {"redis_url": redis_url}}}
    state = {"adapter": {"class": "modules::state::adapters::RedisAdapter", "config": {"redis_url": redis_url}}}
    base = engine_config(**stream)
    modules = [ModuleSpec(m.class_name, state) if m.class_name == "modules::state::StateModule" else m
               for m in base.modules or []]
    return EngineConfig(host="127.0.0.1", port=0, modules=modules)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    with PrivateRedis(tmp_path) as running:
        await running.start()
        yield running


@pytest.fixture
async def raw(server: PrivateRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(server.url)
    yield client
    await client.aclose()


async def test_state_uses_the_production_redis_layout(server: PrivateRedis, raw: aioredis.Redis) -> None:
    async with Engine(config=redis_engine_config(server.url)) as engine:
        worker = await Worker.connect(engine.url)
        value = {"z": [], "big": 2**70, "ü": "✓"}
        await worker.result("state::set", {"scope": "sc:1", "key": "k", "value": value})
        assert await raw.hget("state:sc:1", "k") == '{"z":[],"big":1180591620717411303424,"ü":"✓"}'.encode()
        # written by someone else (e.g. a production engine) is read through our engine
        await raw.hset("state:prod*", "k2", '{"x":1,"a":[]}')
        assert await worker.result("state::get", {"scope": "prod*", "key": "k2"}) == {"x": 1, "a": []}
        update = await worker.result("state::update", {"scope": "prod*", "key": "k2",
                                                       "ops": [{"type": "increment", "path": "x", "by": 4}]})
        assert update == {"old_value": {"x": 1, "a": []}, "new_value": {"x": 5, "a": []}}
        assert await raw.hget("state:prod*", "k2") == b'{"x":5,"a":[]}'
        # stream hashes live beside state hashes and never show up as scopes
        await worker.result("stream::set", {"stream_name": "s", "group_id": "g", "item_id": "i", "data": 1})
        assert await worker.result("state::list_groups", {}) == {"groups": ["prod*", "sc:1"]}
        assert await worker.result("state::list", {"scope": "sc:1"}) == [value]
        assert await worker.result("state::delete", {"scope": "sc:1", "key": "k"}) == value
        assert await raw.exists("state:sc:1") == 0  # the hash went with its last field
        assert await worker.result("state::list_groups", {}) == {"groups": ["prod*"]}
        assert sorted(await raw.keys("*")) == [b"state:prod*", b"stream:s:g"]  # nothing else written
        await worker.close()


async def test_stream_module_survives_a_redis_restart(server: PrivateRedis) -> None:
    async with Engine(config=redis_engine_config(server.url)) as engine:
        assert isinstance(stream_module(engine).store, RedisStream)
        worker = await Worker.connect(engine.url)
        client = await SocketClient.connect(engine)
        await client.join("j", "s", "g")
        assert (await client.recv())["event"] == {"type": "sync", "data": []}
        item = {"stream_name": "s", "group_id": "g", "item_id": "i"}
        await worker.result("stream::set", {**item, "data": {"n": 1}})
        assert (await client.recv())["event"] == {"type": "create", "data": {"n": 1}}
        await worker.result("state::set", {"scope": "sc", "key": "k", "value": 1})

        server.stop()
        assert (await worker.error("stream::set", {**item, "data": {"n": 2}}))["code"] == "STREAM_SET_ERROR"
        assert (await worker.error("stream::get", item))["code"] == "STREAM_GET_ERROR"
        update = {**item, "ops": [{"type": "increment", "path": "n", "by": 1}]}
        assert (await worker.error("stream::update", update))["code"] == "STREAM_UPDATE_ERROR"
        assert (await worker.error("state::set", {"scope": "sc", "key": "k", "value": 2}))["code"] == "SET_ERROR"

        await server.start()
        assert await worker.result("stream::get", item) == {"n": 1}  # the failed writes left nothing behind
        assert await worker.result("state::get", {"scope": "sc", "key": "k"}) == 1
        assert await worker.result("stream::update", update) == {"old_value": {"n": 1}, "new_value": {"n": 2}}
        # the engine re-subscribes to stream::events on its own; events published before that are lost, so the
        # client is closed with 1013 to re-join and re-sync (before, it silently missed them)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await client.recv(10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        client = await SocketClient.connect(engine)
        await client.join("j", "s", "g")
        assert (await client.recv())["event"] == {"type": "sync", "data": [{"n": 2}]}
        await worker.result("stream::set", {**item, "data": {"n": 3}})
        frame = await client.recv()
        assert frame["streamName"] == "s" and frame["event"] == {"type": "update", "data": {"n": 3}}
        await client.close()
        await worker.close()
