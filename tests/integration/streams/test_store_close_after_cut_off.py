"""A store whose first ``aclose()`` was cancelled (an engine's deadline, a Ctrl-C) is closed by a later ``aclose()``:
no connection of its pools stays open, wherever the cancel cut the first close.

Before: the later call saw the close ended and returned at once; the pools the first close had not reached stayed
open (``SQLStream`` on PostgreSQL: 1 or 2 server connections left, the pool's and the LISTEN one).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
import redis.asyncio as aioredis

from iii.stream import StreamSetInput
from iii_streams import RedisStream, SQLStream
from iii_streams.base import Backend
from iii_streams.redis import KeyLayout
from tests.services import require_redis

pytestmark = pytest.mark.timeout(30)

# loop steps before the cancel: 0 cuts the close before its first step; later ones cut it inside its parts
CUT_AFTER_STEPS = range(0, 60, 2)


async def _cut_close_then_close(store: Backend, steps: int) -> bool:
    """Cancel a first ``aclose()`` after ``steps`` loop steps, then ``aclose()`` again; whether the first was cut."""
    first = asyncio.ensure_future(store.aclose())
    for _ in range(steps):
        await asyncio.sleep(0)  # one loop step: the cut point, not a wait for anything
    first.cancel()
    try:
        await first
    except asyncio.CancelledError:
        cut = True
    else:
        cut = False
    await asyncio.wait_for(store.aclose(), 15)
    return cut


async def _settled(count: Callable[[], Awaitable[int]]) -> int:
    """``count()`` once it is 0, or after 0.5 s: the server forgets a closed connection a moment after its close."""
    for _ in range(50):
        n = await count()
        if n == 0:
            break
        await asyncio.sleep(0.01)
    return n


async def _sweep(open_store: Callable[[], Awaitable[Backend]], count: Callable[[], Awaitable[int]]) -> None:
    cuts = 0
    for steps in CUT_AFTER_STEPS:
        store = await open_store()
        assert await count() > 0
        cuts += await _cut_close_then_close(store, steps)
        assert await _settled(count) == 0, f"connections left open after a first close cut after {steps} steps"
    assert cuts > 1  # the sweep did cut closes under way, not only finished ones


async def test_sql_store_on_postgresql(pg_url: str) -> None:
    name = f"cut-close-{uuid.uuid4().hex[:8]}"
    server_url = pg_url.replace("postgresql+asyncpg://", "postgresql://", 1)

    async def open_store() -> Backend:
        store = SQLStream.from_url(pg_url, connect_args={"server_settings": {"application_name": name}})
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
        await store.watch("s").open()  # its LISTEN connection, outside the pool
        return store

    async def count() -> int:
        conn = await asyncpg.connect(server_url)
        try:
            n: int = await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", name)
            return n
        finally:
            await conn.close()

    await _sweep(open_store, count)


async def test_redis_store(redis_admin: aioredis.Redis) -> None:
    name = f"cut-close-{uuid.uuid4().hex[:8]}"
    layout = KeyLayout(name)  # a private namespace on the shared Redis

    async def open_store() -> Backend:
        store = RedisStream.from_url(require_redis(), client_name=name, layout=layout, channel=layout.prefix)
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
        await store.watch("s").open()  # its pub/sub connection, from the store's watch pool
        return store

    async def count() -> int:
        return sum(client.get("name") == name for client in await redis_admin.client_list())

    await _sweep(open_store, count)
