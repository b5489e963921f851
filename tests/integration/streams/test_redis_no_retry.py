"""The Redis store retries nothing: a command whose connection broke fails at once, once, and the next command
gets a new connection. A retried write could apply twice (redis-py cannot tell a command lost before Redis saw it
from one whose reply was lost); the caller, told, decides."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis

from iii.stream import StreamDeleteInput, StreamGetInput, StreamSetInput, StreamUpdateInput, UpdateIncrement
from iii_streams import RedisStream, StreamError
from iii_streams.redis import default_retry
from tests.services import require_redis

pytestmark = pytest.mark.redis


async def _kill_clients_named(url: str, name: str) -> int:
    admin = aioredis.from_url(url)
    try:
        ids = [c["id"] for c in await admin.client_list() if c.get("name") == name]
        for client_id in ids:
            await admin.execute_command("CLIENT", "KILL", "ID", client_id)
        return len(ids)
    finally:
        await admin.aclose()


async def test_a_broken_connection_fails_one_command_once_and_the_next_reconnects() -> None:
    url = require_redis()
    name = f"noretry-{uuid.uuid4().hex[:8]}"
    stream = f"noretry-{uuid.uuid4().hex[:8]}"
    async with RedisStream.from_url(url, client_name=name, max_connections=1,
                                    channel=f"{stream}-events") as store:
        await store.set(StreamSetInput(stream_name=stream, group_id="g", item_id="n", data={"n": 0}))
        assert await _kill_clients_named(url, name) == 1
        with pytest.raises(StreamError):
            await store.update(StreamUpdateInput(stream_name=stream, group_id="g", item_id="n",
                                                 ops=[UpdateIncrement(path="n", by=1)]))
        # the increment sent on the dead connection never applied, and was not re-sent behind the caller's back
        assert await store.get(StreamGetInput(stream_name=stream, group_id="g", item_id="n")) == {"n": 0}
        await store.update(StreamUpdateInput(stream_name=stream, group_id="g", item_id="n",
                                             ops=[UpdateIncrement(path="n", by=1)]))
        assert await store.get(StreamGetInput(stream_name=stream, group_id="g", item_id="n")) == {"n": 1}
        await store.delete(StreamDeleteInput(stream_name=stream, group_id="g", item_id="n"))


def test_the_default_retry_is_the_asyncio_kind_and_retries_nothing() -> None:
    from redis.asyncio.retry import Retry

    retry = default_retry()
    assert isinstance(retry, Retry)  # the synchronous kind wraps nothing for the asyncio client
    assert retry.get_retries() == 0
