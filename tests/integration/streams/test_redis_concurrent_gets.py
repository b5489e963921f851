"""RedisStream: concurrent gets are read together, their ``HGET``s in one pipeline (one connection, one round trip),
each get answered with its own item's value or its own error. A real server and fakeredis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import fakeredis
import pytest

from iii.stream import StreamSetInput
from iii_streams import RedisStream, StreamDataError, StreamError
from tests.integration.streams.counted_reads import CountedReads, get_input, many_gets_read_together
from tests.services import require_redis


@pytest.fixture(params=["redis", "fakeredis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RedisStream]:
    channel = f"gets-events-{uuid.uuid4().hex[:8]}"
    opened = (RedisStream.from_url(require_redis(), channel=channel) if request.param == "redis"
              else RedisStream(fakeredis.FakeAsyncRedis(), channel=channel))
    async with opened:
        yield opened



async def test_many_gets_in_flight_are_read_in_a_few_round_trips_each_with_its_own_value(
        store: RedisStream, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = f"c-{uuid.uuid4().hex[:8]}"
    try:
        await many_gets_read_together(store, stream, monkeypatch)
    finally:
        await store.client.delete(f"stream:{stream}:g")


async def test_an_unreadable_value_or_a_wrong_key_fails_only_its_own_get(store: RedisStream) -> None:
    stream, other = f"u-{uuid.uuid4().hex[:8]}", f"w-{uuid.uuid4().hex[:8]}"
    try:
        for item in ("a", "b"):
            await store.set(StreamSetInput(stream_name=stream, group_id="g", item_id=item, data=item))
        await store.client.hset(f"stream:{stream}:g", "bad", "{not json")
        await store.client.set(f"stream:{other}:g", "a string, not a hash")  # HGET on it: WRONGTYPE
        lone = await asyncio.gather(store.get(get_input(other, "x")), return_exceptions=True)
        counted = CountedReads(store, lanes=1)
        asked = [(stream, "a"), (stream, "bad"), (other, "x"), (stream, "b"), (stream, "a")]
        results = await asyncio.gather(*(store.get(get_input(s, i)) for s, i in asked), return_exceptions=True)
        assert [r if isinstance(r, str) else type(r) for r in results] == [
            "a", StreamDataError, type(lone[0]), "b", "a"]
        assert isinstance(lone[0], StreamError), lone
        assert str(results[2]) == str(lone[0])  # read with others, the same error as read alone
        assert "'bad'" in str(results[1])
        assert counted.calls == [1, 4]
    finally:
        await store.client.delete(f"stream:{stream}:g", f"stream:{other}:g")
