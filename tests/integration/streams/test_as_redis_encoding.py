"""Attack A-S on RedisStream's UTF-8 rule: a client that decodes responses must decode strictly (else a stored value
that is not UTF-8 comes back mangled, an update writes it back mangled, and its compare-and-set never matches:
UpdateConflictError after max_update_attempts tries); with strict decoding such a value is a StreamDataError
naming the operation, as it is without decode_responses. Real Redis, keys under a prefix of the test's own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from iii.stream import StreamGetInput, StreamUpdateInput, UpdateIncrement
from iii_streams import RedisStream, StreamDataError
from iii_streams.redis import KeyLayout
from tests.services import require_redis

NOT_UTF8 = b'{"t": "\xff\xfe", "n": 1}'


@pytest.mark.parametrize("errors", ["replace", "ignore", "backslashreplace"])
def test_a_client_decoding_leniently_is_refused_naming_the_setting(errors: str) -> None:
    client = aioredis.Redis(decode_responses=True, encoding_errors=errors)
    with pytest.raises(ValueError, match=rf"encoding_errors='strict'.*got encoding_errors='{errors}'"):
        RedisStream(client)
    RedisStream(aioredis.Redis(encoding_errors=errors))  # values are read as bytes: the setting is never used


@pytest.fixture
async def raw() -> AsyncIterator[tuple[aioredis.Redis, KeyLayout]]:
    client = aioredis.Redis.from_url(require_redis())
    layout = KeyLayout(f"asenc{uuid.uuid4().hex[:10]}")
    await client.hset(layout.key("s", "g"), "i", NOT_UTF8)  # written by something else
    try:
        yield client, layout
    finally:
        await client.delete(layout.key("s", "g"))
        await client.aclose()


@pytest.mark.redis
@pytest.mark.parametrize("decode", [True, False], ids=["decode_responses", "bytes"])
async def test_a_stored_value_that_is_not_utf8_is_a_data_error(raw: tuple[aioredis.Redis, KeyLayout],
                                                                decode: bool) -> None:
    client, layout = raw
    reader = aioredis.Redis.from_url(require_redis(), decode_responses=decode)
    async with RedisStream(reader, layout=layout, owns_client=True, max_update_attempts=3) as store:
        # named as such, whatever the client decodes (it read "not JSON", in the parser's words, or named no item)
        with pytest.raises(StreamDataError, match=r"field 'i' in Redis hash .* is not UTF-8 text \(invalid"):
            await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i"))
        with pytest.raises(StreamDataError):
            await store.update(StreamUpdateInput(stream_name="s", group_id="g", item_id="i",
                                                 ops=[UpdateIncrement(path="n", by=1)]))
    assert await client.hget(layout.key("s", "g"), "i") == NOT_UTF8  # left as it was


@pytest.mark.redis
async def test_a_value_that_is_not_utf8_fails_only_its_own_items_updates(raw: tuple[aioredis.Redis, KeyLayout]) -> None:
    """Updates of two items of one hash share a batch; one item holds a value that is not UTF-8. Before, decoding
    it failed the whole batch with a bare UnicodeDecodeError, the other item's caller included; now only the
    callers of that item get a StreamDataError, and the other item is updated."""
    client, layout = raw
    async with RedisStream(aioredis.Redis.from_url(require_redis()), layout=layout, owns_client=True) as store:
        def inc(item: str) -> StreamUpdateInput:
            return StreamUpdateInput(stream_name="s", group_id="g", item_id=item, ops=[UpdateIncrement(path="n", by=1)])

        good: Any
        bad: Any
        good, bad = await asyncio.gather(store.update(inc("ok")), store.update(inc("i")), return_exceptions=True)
        assert isinstance(bad, StreamDataError) and "is not UTF-8 text" in str(bad) and bad.applied is False, bad
        assert not isinstance(good, BaseException), good
        assert good.new_value == {"n": 1}
    assert await client.hget(layout.key("s", "g"), "i") == NOT_UTF8
