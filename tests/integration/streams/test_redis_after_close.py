"""A ``RedisStream`` refuses operations once its close began, as ``SQLStream`` does.

Before: redis-py's pool connects again after its close, so the store went on serving after ``aclose()``: 20 writes
after the close all succeeded and opened 20 connections again, which a second ``aclose()`` left open (20
``ResourceWarning: unclosed Connection`` at exit).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis

from iii.stream import StreamGetInput, StreamSetInput
from iii_streams import RedisStream
from iii_streams.errors import StreamClosedError

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30)]

URL = "redis://127.0.0.1:6379/0"


async def _connections_named(admin: Redis, name: str) -> int:
    return sum(1 for client in await admin.client_list() if client.get("name") == name)


async def test_operations_after_the_close_are_refused_and_open_no_connection() -> None:
    name = f"after-close-{uuid.uuid4().hex[:12]}"
    prefix = f"t-after-close-{uuid.uuid4().hex[:8]}"
    admin = Redis.from_url(URL)
    store = RedisStream.from_url(f"{URL}?key_prefix={prefix}", client_name=name)
    try:
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
        assert await _connections_named(admin, name) >= 1
        await store.aclose()
        for _ in range(3):
            with pytest.raises(StreamClosedError, match=r"RedisStream\.set: the store is closed; nothing was applied"):
                await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=2))
        with pytest.raises(StreamClosedError, match=r"RedisStream\.get: the store is closed"):
            await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i"))
        # The server drops a closed connection from CLIENT LIST a moment after the close (a CI run saw it still
        # listed); a connection the refused operations opened would stay listed.
        for _ in range(500):  # up to 5 s
            left = await _connections_named(admin, name)
            if not left:
                break
            await asyncio.sleep(0.01)
        assert left == 0
        async with RedisStream.from_url(f"{URL}?key_prefix={prefix}") as again:  # the refused writes never ran
            assert await again.get(StreamGetInput(stream_name="s", group_id="g", item_id="i")) == 1
    finally:
        await store.aclose()
        for key in await admin.keys(f"{prefix}*"):
            await admin.delete(key)
        await admin.aclose()
