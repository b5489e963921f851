"""RedisStream, a real server: an item whose stored value another program wrote as text that is not JSON.

A ``set`` or ``delete`` replaces the value and reads the old one in one script, so it is applied before the old value
is parsed: its error says so (``applied`` ``True``). Before, it raised the bare parse error as if it had failed, while
its new value was stored and its event published. An ``update`` of such an item is refused (``applied`` ``False``),
and the other updates of its batch go through.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis.asyncio

from iii.stream import (
    StreamDeleteInput,
    StreamGetInput,
    StreamListInput,
    StreamSetInput,
    StreamUpdateInput,
    UpdateIncrement,
)
from iii_streams import RedisStream, StreamBackendError, StreamDataError, StreamGapError
from iii_streams.redis_internals import RAW_REPLY
from tests.services import require_redis


async def test_a_write_over_a_value_that_is_not_json_tells_its_outcome() -> None:
    stream = f"unread-{uuid.uuid4().hex[:8]}"
    hash_key = f"stream:{stream}:g"

    def names(item: str) -> dict[str, Any]:
        return {"stream_name": stream, "group_id": "g", "item_id": item}

    async with RedisStream.from_url(require_redis(), channel=f"unread-events-{uuid.uuid4().hex[:8]}") as store:
        try:
            await store.set(StreamSetInput(**names("ok"), data={"n": 0}))
            await store.client.hset(hash_key, "bad", "{not json")
            increment = [UpdateIncrement(path="n", by=1)]
            results = await asyncio.gather(
                *(store.update(StreamUpdateInput(**names(item), ops=increment)) for item in ("ok", "bad", "ok")),
                return_exceptions=True)
            assert [getattr(r, "new_value", None) for r in results] == [{"n": 1}, None, {"n": 2}]
            refused = results[1]
            assert isinstance(refused, StreamDataError) and refused.applied is False
            assert "'bad'" in str(refused) and "not JSON" in str(refused) and "not applied" in str(refused)
            assert await store.client.hget(hash_key, "bad") == b"{not json"  # left as it was

            async with store.watch(stream_name=stream) as events:
                with pytest.raises(StreamDataError, match=r"not JSON.*the write was applied") as caught:
                    await store.set(StreamSetInput(**names("bad"), data=5))
                assert caught.value.applied is True
                assert (await asyncio.wait_for(anext(events), 10))["event"] == {"type": "update", "data": 5}
            assert await store.get(StreamGetInput(**names("bad"))) == 5

            await store.client.hset(hash_key, "bad", "{not json")
            with pytest.raises(StreamDataError, match="the write was applied") as caught:
                await store.delete(StreamDeleteInput(**names("bad")))
            assert caught.value.applied is True
            assert await store.client.hget(hash_key, "bad") is None
            assert await store.get(StreamGetInput(**names("ok"))) == {"n": 2}
        finally:
            await store.client.delete(hash_key)


async def test_a_delete_event_that_is_not_json_is_a_gap_to_watchers_that_report_them() -> None:
    """A delete publishes the old value as stored: one that is not JSON made an event no watcher could parse, which
    was skipped with a log line, so the engine's socket clients kept the deleted item. A watch that reports gaps (the
    engine's feed: its clients then join again for a fresh sync) now raises ``StreamGapError`` for it and reads on."""
    stream = f"unread-gap-{uuid.uuid4().hex[:8]}"
    hash_key = f"stream:{stream}:g"
    item = {"stream_name": stream, "group_id": "g", "item_id": "bad"}
    channel = f"unread-gap-events-{uuid.uuid4().hex[:8]}"
    async with RedisStream.from_url(require_redis(), channel=channel, report_watch_gaps=True) as store:
        try:
            await store.set(StreamSetInput(**item, data=1))
            await store.client.hset(hash_key, "bad", "{not json")
            async with store.watch(stream_name=stream) as events:
                with pytest.raises(StreamDataError, match="the write was applied"):
                    await store.delete(StreamDeleteInput(**item))
                with pytest.raises(StreamGapError, match="not JSON"):
                    await asyncio.wait_for(anext(events), 10)  # before: skipped, and the next event came instead
                await store.set(StreamSetInput(**item, data=2))
                assert (await asyncio.wait_for(anext(events), 10))["event"] == {"type": "create", "data": 2}
        finally:
            await store.client.delete(hash_key)


async def test_a_value_that_is_not_utf8_is_named_so() -> None:
    """Before, orjson's words: "is not JSON: str is not valid UTF-8: surrogates not allowed"."""
    stream = f"unread-{uuid.uuid4().hex[:8]}"
    async with RedisStream.from_url(require_redis(), channel=f"unread-events-{uuid.uuid4().hex[:8]}") as store:
        try:
            await store.client.hset(f"stream:{stream}:g", "bad", b'"\xff"')
            with pytest.raises(StreamDataError) as caught:
                await store.get(StreamGetInput(stream_name=stream, group_id="g", item_id="bad"))
            assert "'bad'" in str(caught.value) and "is not UTF-8 text (invalid start byte at byte 1)" in str(
                caught.value), str(caught.value)
        finally:
            await store.client.delete(f"stream:{stream}:g")


async def test_a_decoding_client_isolates_a_value_that_is_not_utf8() -> None:
    """A store on a client made with ``decode_responses=True`` reads replies as bytes all the same (``RAW_REPLY``):
    before, the client's decode of one value that is not UTF-8 failed the whole reply, so every update of its batch
    failed (``applied`` unknown, none written, no item named), and a set or delete over it, applied, said unknown."""
    assert RAW_REPLY, "this redis-py has no NEVER_DECODE option"  # an upgrade that drops it fails here
    stream = f"unread-{uuid.uuid4().hex[:8]}"
    hash_key = f"stream:{stream}:g"

    def names(item: str) -> dict[str, Any]:
        return {"stream_name": stream, "group_id": "g", "item_id": item}

    client = redis.asyncio.Redis.from_url(require_redis(), decode_responses=True)
    async with RedisStream(client, owns_client=True) as store:
        try:
            await store.set(StreamSetInput(**names("ok"), data={"n": 0}))
            await client.hset(hash_key, "bad", b'"\xff"')
            increment = [UpdateIncrement(path="n", by=1)]
            results = await asyncio.gather(
                *(store.update(StreamUpdateInput(**names(item), ops=increment)) for item in ("ok", "bad", "ok")),
                return_exceptions=True)
            assert [getattr(r, "new_value", None) for r in results] == [{"n": 1}, None, {"n": 2}]
            assert isinstance(results[1], StreamDataError) and results[1].applied is False
            assert "'bad'" in str(results[1]) and "not UTF-8 text" in str(results[1])
            with pytest.raises(StreamDataError, match="not UTF-8 text"):
                await store.get(StreamGetInput(**names("bad")))
            with pytest.raises(StreamDataError, match=r"not UTF-8 text.*the write was applied") as caught:
                await store.set(StreamSetInput(**names("bad"), data=5))
            assert caught.value.applied is True
            await client.hset(hash_key, "bad", b'"\xff"')
            with pytest.raises(StreamDataError, match="the write was applied") as caught:
                await store.delete(StreamDeleteInput(**names("bad")))
            assert caught.value.applied is True and await client.hget(hash_key, "bad") is None
            assert await store.get(StreamGetInput(**names("ok"))) == {"n": 2}
        finally:
            await client.delete(hash_key)


async def test_a_list_names_the_item_whose_value_is_not_json_and_a_wrong_type_read_changes_nothing() -> None:
    # list() reads a group with HVALS, which names no item: the error said field '<hvals>'. A read of a key of
    # another type said "nothing was written", as if it had been a write.
    stream = f"unread-list-{uuid.uuid4().hex[:8]}"
    hash_key = f"stream:{stream}:g"
    async with RedisStream.from_url(require_redis(), channel=f"unread-list-{uuid.uuid4().hex[:8]}") as store:
        try:
            for item in ("a", "b", "c"):
                await store.set(StreamSetInput(stream_name=stream, group_id="g", item_id=item, data=item))
            await store.client.hset(hash_key, "b", "{not json")
            for read in (store.list(StreamListInput(stream_name=stream, group_id="g")),
                         store.list_text(StreamListInput(stream_name=stream, group_id="g"), max_bytes=1000)):
                with pytest.raises(StreamDataError, match=r"value of field 'b' in Redis hash .* not JSON"):
                    await read
            await store.client.delete(hash_key)
            await store.client.set(hash_key, "a string, not a hash")
            with pytest.raises(StreamBackendError, match="WRONGTYPE") as caught:
                await store.list(StreamListInput(stream_name=stream, group_id="g"))
            assert "refused the command before it changed anything" in str(caught.value)
            assert "nothing was written" not in str(caught.value)
        finally:
            await store.client.delete(hash_key)
