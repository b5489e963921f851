"""RedisStream against a real Redis: the conformance suite, the production layout, SCAN, and a server restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError

from iii.stream import StreamGetInput, StreamListGroupsInput, StreamSetInput, StreamUpdateInput, UpdateIncrement
from iii.wire import loads
from iii_streams import RedisStream, StreamUnavailableError, open_stream
from iii_streams.testing import Names, StreamConformance
from tests.integration.streams.private_redis import PrivateRedis
from tests.services import require_redis

pytestmark = pytest.mark.redis


async def _drop_run_keys(url: str, names: Names) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"stream:*{names.run_id}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


class TestRedisStream(StreamConformance):
    exact_group_listing = True  # stream names are escaped in keys (issue #8)

    @pytest.fixture
    def stream_url(self) -> str:
        return require_redis()

    @pytest.fixture
    async def stream(self, stream_url: str, names: Names) -> AsyncIterator[RedisStream]:
        async with RedisStream.from_url(stream_url) as store:
            yield store
        await _drop_run_keys(stream_url, names)


@pytest.fixture
async def redis_store() -> AsyncIterator[tuple[RedisStream, aioredis.Redis, Names]]:
    url = require_redis()
    names = Names()
    raw = aioredis.Redis.from_url(url)
    async with open_stream(url) as store:
        assert isinstance(store, RedisStream)
        yield store, raw, names
    await _drop_run_keys(url, names)
    await raw.aclose()


async def _event_for(pubsub: PubSub, stream_name: str) -> dict[str, Any]:
    # the channel is shared with anything else using this Redis: skip other streams' events
    while True:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        if message is not None:
            event: dict[str, Any] = loads(message["data"])
            if event.get("streamName") == stream_name:
                return event


async def test_production_layout_and_event_channel(redis_store: tuple[RedisStream, aioredis.Redis, Names]) -> None:
    store, raw, names = redis_store
    s = names.stream("layout")
    pubsub = raw.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe("stream::events")
    await store.set(StreamSetInput(stream_name=s, group_id="g:1", item_id="i", data={"z": [], "a": 2**70}))
    assert await raw.type(f"stream:{s}:g:1") == b"hash"
    assert await raw.hgetall(f"stream:{s}:g:1") == {b"i": b'{"z":[],"a":1180591620717411303424}'}
    event = await asyncio.wait_for(_event_for(pubsub, s), 5)
    assert list(event) == ["type", "timestamp", "streamName", "groupId", "id", "event"]
    assert event["event"] == {"type": "create", "data": {"z": [], "a": 2**70}}
    await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_reads_what_a_production_engine_wrote(redis_store: tuple[RedisStream, aioredis.Redis, Names]) -> None:
    store, raw, names = redis_store
    s = names.stream("shared")
    await raw.hset(f"stream:{s}:room", "msg-1", '{"text":"hi","n":1}')
    assert await store.get(StreamGetInput(stream_name=s, group_id="room", item_id="msg-1")) == {"text": "hi", "n": 1}
    result = await store.update(
        StreamUpdateInput(stream_name=s, group_id="room", item_id="msg-1", ops=[UpdateIncrement(path="n", by=1)])
    )
    assert result.new_value == {"text": "hi", "n": 2}
    assert await raw.hget(f"stream:{s}:room", "msg-1") == b'{"text":"hi","n":2}'


async def test_list_groups_scans_many_keys(redis_store: tuple[RedisStream, aioredis.Redis, Names]) -> None:
    store, raw, names = redis_store
    s = names.stream("scan*[x]")
    async with raw.pipeline(transaction=False) as pipe:
        for i in range(2500):
            pipe.hset(f"stream:{s}:g{i}", "i", "1")
        await pipe.execute()
    await raw.hset(f"stream:{s}X:decoy", "i", "1")  # a glob-unsafe stream name must not match its neighbours
    groups = await store.list_groups(StreamListGroupsInput(stream_name=s))
    assert sorted(groups) == sorted(f"g{i}" for i in range(2500))


async def test_survives_a_redis_restart(tmp_path: Path) -> None:
    with PrivateRedis(tmp_path) as server:
        await server.start()
        async with RedisStream.from_url(server.url) as store:
            item = {"stream_name": "s", "group_id": "g", "item_id": "i"}
            await store.set(StreamSetInput(**item, data={"n": 1}))
            watch = store.watch(stream_name="s")
            await watch.open()
            server.stop()
            with pytest.raises(StreamUnavailableError, match=r"RedisStream\.update: Redis unreachable") as failed:
                await store.update(StreamUpdateInput(**item, ops=[UpdateIncrement(path="n", by=1)]))
            assert isinstance(failed.value.__cause__, RedisConnectionError)  # the driver's error is kept
            await server.start()
            assert await store.get(StreamGetInput(**item)) == {"n": 1}  # the failed update left nothing behind
            result = await store.update(StreamUpdateInput(**item, ops=[UpdateIncrement(path="n", by=1)]))
            assert result.new_value == {"n": 2}
            # the watcher reconnects on its own; writes published before it re-subscribed are lost by design
            got = None
            for attempt in range(40):
                await store.set(StreamSetInput(**item, data={"n": 100 + attempt}))
                try:
                    got = await asyncio.wait_for(anext(watch), 0.25)
                    break
                except TimeoutError:
                    continue
            assert got is not None and got["event"]["type"] == "update"
            await watch.aclose()
