"""The Redis pool's plain take and give-back (no locks or records while nothing contends for the pool) leave
redis-py's guarantees as they were: a caller waiting for a connection is woken by the give-back that frees one
(a plain give-back would not notify it: it waits on the pool's condition, unlocked meanwhile), and connections are
reused, not multiplied."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import BlockingConnectionPool

from iii_streams.redis import waiting_client
from iii_streams.redis_internals import PLAIN_POOL_MISSING
from tests.services import require_redis

pytestmark = [pytest.mark.timeout(30), pytest.mark.redis]


async def test_a_caller_waiting_for_the_only_connection_gets_it_when_it_is_given_back() -> None:
    client = waiting_client(f"{require_redis()}?max_connections=1&timeout=5")
    pool: Any = client.connection_pool
    try:
        held = await pool.get_connection()
        waiting = asyncio.create_task(client.ping())
        while not pool._taking:  # noqa: ASYNC110 - the waiter is inside get_connection: no event says so
            await asyncio.sleep(0.001)
        await pool.release(held)
        assert await asyncio.wait_for(waiting, 3) is True  # before the fix of the plain path: PoolExhaustedError at 5 s
    finally:
        await client.aclose()


async def test_one_at_a_time_commands_reuse_one_connection_through_the_plain_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    taken_by_redis_py: list[int] = []
    redis_py_take = BlockingConnectionPool.get_connection

    async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        taken_by_redis_py.append(1)
        return await redis_py_take(self, *args, **kwargs)

    monkeypatch.setattr(BlockingConnectionPool, "get_connection", counted)
    client = waiting_client(f"{require_redis()}?max_connections=4")
    pool: Any = client.connection_pool
    try:
        await client.ping()  # redis-py's way: the pool's metrics looked up, a connection made
        for _ in range(50):
            assert await client.ping() is True
        assert len(pool._available_connections) == 1 and not pool._in_use_connections
        if not PLAIN_POOL_MISSING:  # (an older redis-py takes and gives back its own way)
            assert len(taken_by_redis_py) == 1
    finally:
        await client.aclose()
