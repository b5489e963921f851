"""Edges of a ``RedisStream``'s own watch pool against a real server: ``aclose()`` while the first watch is still
opening (waiting for the store's full watch pool, or for a server that never answers) ends that open at once.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from iii_streams import RedisStream
from iii_streams.errors import StreamClosedError
from iii_streams.redis import KeyLayout
from tests.services import require_redis

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30)]


@pytest.fixture
def name() -> str:
    return f"hwpe{uuid.uuid4().hex[:10]}"


def _store(client: aioredis.Redis, name: str, **options: Any) -> RedisStream:
    return RedisStream(client, layout=KeyLayout(name), channel=name, **options)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose kernel completes the TCP handshake (the listen backlog) but where nothing ever answers: a
    connection's first command (``CLIENT SETNAME``) waits for good."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


async def test_aclose_ends_a_first_watch_waiting_for_the_full_watch_pool(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the opening watch waited out the watch pool's bound after the store had closed, then failed with
    PoolExhaustedError (30 s in production; 5 s here)."""
    monkeypatch.setattr("iii_streams.redis._WATCH_POOL_TIMEOUT", 5.0)
    client = aioredis.Redis.from_url(require_redis(), client_name=name)
    try:
        store = _store(client, name)
        pool = store._watch_client.connection_pool
        held = [await pool.get_connection() for _ in range(pool.max_connections)]  # type: ignore[no-untyped-call]
        try:
            opening = asyncio.ensure_future(store.watch("s").open())
            done, _ = await asyncio.wait({opening}, timeout=0.2)
            assert not done, opening.exception() if done else None  # waiting for the pool
            await asyncio.wait_for(store.aclose(), 5)
            with pytest.raises(StreamClosedError):
                await asyncio.wait_for(opening, 2)
        finally:
            for conn in held:
                await pool.release(conn)
        assert not pool._in_use_connections
    finally:
        await client.aclose()


async def test_aclose_ends_a_first_watch_whose_server_never_answers(name: str, silent_port: int) -> None:
    """Before: the opening watch waited for the silent server until the store's own timeout (10 s here, 60 s by
    default) though the store had closed, and then failed with a timeout."""
    client = aioredis.Redis(host="127.0.0.1", port=silent_port, client_name=name)
    try:
        store = _store(client, name, timeout=10)
        opening = asyncio.ensure_future(store.watch("s").open())
        done, _ = await asyncio.wait({opening}, timeout=0.3)
        assert not done, opening.exception() if done else None  # its CLIENT SETNAME waits for a reply
        await asyncio.wait_for(store.aclose(), 5)
        with pytest.raises(StreamClosedError):
            await asyncio.wait_for(opening, 2)
        pool = store._watch_client.connection_pool
        assert not pool._in_use_connections
    finally:
        await client.aclose()
