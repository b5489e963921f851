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


async def test_a_command_on_a_broken_connection_applies_at_most_once_and_the_next_reconnects() -> None:
    url = require_redis()
    name = f"noretry-{uuid.uuid4().hex[:8]}"
    stream = f"noretry-{uuid.uuid4().hex[:8]}"
    key = {"stream_name": stream, "group_id": "g", "item_id": "n"}
    increment = [UpdateIncrement(path="n", by=1)]
    async with RedisStream.from_url(url, client_name=name, max_connections=1,
                                    channel=f"{stream}-events") as store:
        await store.set(StreamSetInput(**key, data={"n": 0}))
        assert await _kill_clients_named(url, name) == 1
        # Whether the pool notices the closed socket before the write (redis-py checks a connection it hands out
        # for pending data, racing the server's close) decides whether this fails; either way it applies at most
        # once and is never re-sent behind the caller's back. A failure whose ``applied`` is False applied nothing;
        # one whose ``applied`` is None (the script had been sent when the connection broke) may have applied it.
        try:
            await store.update(StreamUpdateInput(**key, ops=increment))
        except StreamError as exc:
            applied = getattr(exc, "applied", None)
            stored = await store.get(StreamGetInput(**key))
            assert stored in ([{"n": 0}] if applied is False else [{"n": 0}, {"n": 1}]), (stored, str(exc))
            expected = stored["n"]
        else:
            expected = 1
        assert await store.get(StreamGetInput(**key)) == {"n": expected}
        await store.update(StreamUpdateInput(**key, ops=increment))
        assert await store.get(StreamGetInput(**key)) == {"n": expected + 1}
        await store.delete(StreamDeleteInput(**key))


def test_the_default_retry_is_the_asyncio_kind_and_retries_nothing() -> None:
    from redis.asyncio.retry import Retry

    retry = default_retry()
    assert isinstance(retry, Retry)  # the synchronous kind wraps nothing for the asyncio client
    assert retry.get_retries() == 0
