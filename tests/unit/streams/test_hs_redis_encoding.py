"""RedisStream refuses a client whose text encoding is not UTF-8 (stored values are UTF-8 JSON text that other
processes read): at construction, naming the setting; UTF-8 spelled otherwise and decode_responses=True pass."""

from __future__ import annotations

import fakeredis
import pytest
import redis.asyncio as aioredis

from iii.stream import StreamGetInput, StreamSetInput
from iii_streams import RedisStream, open_stream


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16", "cp1252", "no-such-codec"])
def test_a_client_with_another_encoding_is_refused_naming_the_setting(encoding: str) -> None:
    with pytest.raises(ValueError, match=rf"encoding='utf-8'.*got encoding='{encoding}'"):
        RedisStream(aioredis.Redis(encoding=encoding))


def test_from_url_refuses_another_encoding_too() -> None:
    with pytest.raises(ValueError, match=r"got encoding='utf-16'"):
        RedisStream.from_url("redis://127.0.0.1:6379/0", encoding="utf-16")
    with pytest.raises(ValueError, match=r"got encoding='latin-1'"):
        open_stream("redis://127.0.0.1:6379/0", encoding="latin-1")


@pytest.mark.parametrize("encoding", ["utf-8", "UTF8", "utf_8"])
async def test_utf8_spelled_any_way_and_decoded_responses_are_accepted(encoding: str) -> None:
    client = fakeredis.FakeAsyncRedis(encoding=encoding, decode_responses=True)
    async with RedisStream(client) as store:
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="1", data={"t": "é€"}))
        assert await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="1")) == {"t": "é€"}
    await client.aclose()
