"""``stream::list`` of a stream served from an ``iii_streams`` store (``create_stream``) refuses a group over the
engine's message size limit before building it: the store's ``list_text(max_bytes=...)`` finds out from the stored
sizes. Before, ``list()`` decoded the whole group (a 40 MB group: ~150 MB at peak, ~1 s) and only then was the encoded
answer refused as over the limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from iii.stream import StreamListInput, StreamSetInput
from iii.stream_glue import StreamFunctions
from iii_streams import MemoryStream, RedisStream

ITEMS = 40
ITEM = "x" * 10_000  # 40 items of ~10 KB: ~400 KB of JSON
BOUND = 100_000


class CountingMemory(MemoryStream):
    lists = 0

    async def list(self, input: StreamListInput, **kwargs: Any) -> Any:
        self.lists += 1
        return await super().list(input, **kwargs)


class CountingRedis(RedisStream):
    lists = 0

    async def list(self, input: StreamListInput, **kwargs: Any) -> Any:
        self.lists += 1
        return await super().list(input, **kwargs)


@pytest.fixture(params=["memory", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Memory and Redis (the conftest's ``store_url`` of each)."""
    return str(request.param)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Any]:
    """The store of ``store_url``, counting its ``list`` calls."""
    if store_url == "memory://":
        yield CountingMemory()
        return
    async with CountingRedis.from_url(store_url) as redis_store:
        yield redis_store


async def _fill(store: Any, group: str, items: int) -> None:
    for i in range(items):
        await store.set(StreamSetInput(stream_name="big", group_id=group, item_id=f"i{i:03}", data={"n": i, "s": ITEM}))


async def test_a_group_over_the_limit_is_refused_without_being_listed(store: Any) -> None:
    await _fill(store, "g", ITEMS)
    handlers = StreamFunctions(store, max_bytes=lambda: BOUND)
    with pytest.raises(ValueError) as refused:
        await handlers.list({"stream_name": "big", "group_id": "g"})
    message = str(refused.value)
    assert "stream::list(big)" in message and "group 'g'" in message and "100,000 bytes" in message, message
    assert store.lists == 0  # the group was never built as objects


async def test_a_group_under_the_limit_is_the_same_answer(store: Any) -> None:
    await _fill(store, "small", 3)
    handlers = StreamFunctions(store, max_bytes=lambda: BOUND)
    answer = await handlers.list({"stream_name": "big", "group_id": "small"})
    expected = await store.list(StreamListInput(stream_name="big", group_id="small"))
    assert sorted(answer, key=lambda item: item["n"]) == sorted(expected, key=lambda item: item["n"])
    assert [item["n"] for item in sorted(answer, key=lambda item: item["n"])] == [0, 1, 2]
    empty = await handlers.list({"stream_name": "big", "group_id": "none"})
    assert empty == []


async def test_without_a_known_limit_the_group_is_listed(store: Any) -> None:
    await _fill(store, "g", 2)
    answer = await StreamFunctions(store, max_bytes=lambda: None).list({"stream_name": "big", "group_id": "g"})
    assert len(answer) == 2 and store.lists == 1
