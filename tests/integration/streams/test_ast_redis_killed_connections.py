"""Attack A-St on RedisStream.from_url's pool: the server ends the pooled connections while they are idle
(``CLIENT KILL``, as a restart, a failover or Redis's ``timeout`` setting does). Before, redis-py (8.x, with
maintenance notifications on "auto") handed out such a connection and the next command on it failed with
StreamUnavailableError "Connection closed by server" although Redis was up; now the pool reconnects a connection
the server closed when it is checked out, and every operation succeeds. Only this test's own connections are
killed (by CLIENT ID): the Redis server is shared."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from iii.stream import StreamGetInput, StreamListInput, StreamSetInput, StreamUpdateInput, UpdateIncrement
from iii_streams import RedisStream
from iii_streams.redis import KeyLayout
from tests.integration.streams.conftest import delete_redis_keys
from tests.polling import until
from tests.services import require_redis

pytestmark = pytest.mark.redis

POOL = 3


@pytest.fixture
async def store() -> AsyncIterator[RedisStream]:
    layout = KeyLayout(f"astkill{uuid.uuid4().hex[:10]}")
    async with RedisStream.from_url(require_redis(), layout=layout, max_connections=POOL) as backend:
        yield backend
    await delete_redis_keys(f"{layout.prefix}:*")


async def _kill_pooled_connections(store: RedisStream) -> list[Any]:
    """Check out every pooled connection, learn its CLIENT ID, put it back idle, and have the server end it."""
    pool = store.client.connection_pool
    conns = [await pool.get_connection() for _ in range(POOL)]  # type: ignore[no-untyped-call]
    ids = []
    for conn in conns:
        await conn.send_command("CLIENT", "ID")
        ids.append(int(await conn.read_response()))
    for conn in conns:
        await pool.release(conn)
    admin = aioredis.Redis.from_url(require_redis())
    try:
        for client_id in ids:
            assert await admin.client_kill_filter(_id=str(client_id)) == 1
    finally:
        await admin.aclose()
    return conns


async def test_operations_after_the_server_ended_idle_pooled_connections_succeed(store: RedisStream) -> None:
    item = {"stream_name": "killed", "group_id": "g", "item_id": "i"}
    await store.set(StreamSetInput(**item, data={"n": 0}))
    for _ in range(2):  # twice: the reconnected connections can be ended and replaced too
        conns = await _kill_pooled_connections(store)
        await until(lambda: all(c._reader is None or c._reader.at_eof() for c in conns))  # noqa: B023
        results = await asyncio.gather(
            store.get(StreamGetInput(**item)),
            store.list(StreamListInput(stream_name="killed", group_id="g")),
            store.update(StreamUpdateInput(**item, ops=[UpdateIncrement(path="n", by=1)])),
        )
        assert results[0] is not None and results[1]
    assert await store.get(StreamGetInput(**item)) == {"n": 2}
