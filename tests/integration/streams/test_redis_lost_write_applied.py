"""A RedisStream write whose connection is lost says whether it may have been applied (``applied`` of
``StreamUnavailableError``). Before, every such failure was "Redis unreachable: Connection closed by server." with
``applied`` unset: under repeated ``CLIENT KILL`` during increments, 10 of 150 failed updates had been applied.

A small TCP proxy sits between the store and the real Redis (the shared server, keys under this test's own prefix):
(a) it ends the store's connection and refuses new ones, so the write fails before it is sent: ``applied`` is
``False`` and nothing is stored; (b) it forwards the write's script to Redis, waits for Redis's reply (so the
script ran) and cuts the connection instead of passing the reply on: ``applied`` is ``None``, the message says the
write was sent and may have been applied, and Redis holds the write.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from iii.stream import StreamDeleteInput, StreamGetInput, StreamSetInput, StreamUpdateInput, UpdateIncrement
from iii_streams import RedisStream, StreamUnavailableError
from iii_streams.redis import KeyLayout
from tests.integration.streams.conftest import delete_redis_keys
from tests.polling import until
from tests.services import require_redis

pytestmark = pytest.mark.redis


class CuttingProxy:
    """Forwards TCP between the store and Redis; ``refuse()`` ends every link and stops accepting, ``cut_reply_of``
    makes the next client command holding ``marker`` reach Redis and its reply be dropped with the connection."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._links: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._marker: bytes | None = None
        self.swallowed = b""  # the reply Redis sent and the store never got
        self.cut = asyncio.Event()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def cut_reply_of(self, marker: bytes) -> None:
        self._marker = marker

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self._target)
        self._links.append((client_w, server_w))
        cutting = asyncio.Event()

        async def up() -> None:  # store -> Redis
            while data := await client_r.read(65536):
                if self._marker is not None and self._marker in data:
                    self._marker = None
                    cutting.set()  # before forwarding: down() must not pass the reply on
                server_w.write(data)
                await server_w.drain()

        async def down() -> None:  # Redis -> store
            while data := await server_r.read(65536):
                if cutting.is_set():  # the reply of the marked command: Redis ran it
                    self.swallowed = data
                    client_w.transport.abort()
                    server_w.close()
                    self.cut.set()
                    return
                client_w.write(data)
                await client_w.drain()

        for coro in (up(), down()):
            task = asyncio.create_task(self._quiet(coro))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _quiet(coro: Any) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await coro

    async def refuse(self) -> None:
        """End every link and stop accepting: the store's reconnect is refused."""
        assert self._server is not None
        self._server.close()
        for client_w, server_w in self._links:
            client_w.transport.abort()
            server_w.close()
        await self._server.wait_closed()

    async def aclose(self) -> None:
        await self.refuse()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
async def setup() -> AsyncIterator[tuple[RedisStream, RedisStream, CuttingProxy]]:
    url = require_redis()
    parts = urlsplit(url)
    proxy = CuttingProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    port = await proxy.start()
    proxied = urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))
    layout = KeyLayout(f"lostwrite{uuid.uuid4().hex[:10]}")
    channel = f"{layout.prefix}-events"
    try:
        async with RedisStream.from_url(proxied, layout=layout, channel=channel, max_connections=1) as store, \
                RedisStream.from_url(url, layout=layout, channel=channel) as direct:
            yield store, direct, proxy
    finally:
        await proxy.aclose()
        await delete_redis_keys(f"{layout.prefix}:*")


ITEM = {"stream_name": "s", "group_id": "g", "item_id": "n"}
WRITES = {
    "set": lambda s: s.set(StreamSetInput(**ITEM, data={"n": 7})),
    "update": lambda s: s.update(StreamUpdateInput(**ITEM, ops=[UpdateIncrement(path="n", by=1)])),
    "delete": lambda s: s.delete(StreamDeleteInput(**ITEM)),
}
APPLIED = {"set": {"n": 7}, "update": {"n": 2}, "delete": None}


async def _prepare(store: RedisStream) -> None:
    """The item at {"n": 1}, written through the proxy, each write script loaded and run once (update twice, so
    this process knows the item's text and the next update sends its script without a read)."""
    await store.set(StreamSetInput(**ITEM, data={"n": 0}))
    await store.delete(StreamDeleteInput(**ITEM))
    await store.set(StreamSetInput(**ITEM, data={"n": -1}))
    for _ in range(2):
        await store.update(StreamUpdateInput(**ITEM, ops=[UpdateIncrement(path="n", by=1)]))
    assert await store.get(StreamGetInput(**ITEM)) == {"n": 1}


@pytest.mark.parametrize("operation", list(WRITES))
async def test_a_write_whose_connection_is_lost_before_it_is_sent_says_it_was_not_applied(
    setup: tuple[RedisStream, RedisStream, CuttingProxy], operation: str
) -> None:
    store, direct, proxy = setup
    await _prepare(store)
    pooled = list(store.client.connection_pool._available_connections)
    assert pooled
    await proxy.refuse()
    # the store's connection saw its end: the pool reconnects it, and that reconnect is refused
    await until(lambda: all(c._reader is None or c._reader.at_eof() for c in pooled))
    with pytest.raises(StreamUnavailableError) as caught:
        await WRITES[operation](store)
    assert caught.value.applied is False, str(caught.value)
    assert "the write was not sent and not applied" in str(caught.value)
    assert await direct.get(StreamGetInput(**ITEM)) == {"n": 1}  # nothing was written


@pytest.mark.parametrize("operation", list(WRITES))
async def test_a_write_whose_reply_is_lost_says_it_may_have_been_applied_and_it_was(
    setup: tuple[RedisStream, RedisStream, CuttingProxy], operation: str
) -> None:
    store, direct, proxy = setup
    await _prepare(store)
    proxy.cut_reply_of(b"EVALSHA")
    with pytest.raises(StreamUnavailableError) as caught:
        await WRITES[operation](store)
    assert proxy.cut.is_set() and proxy.swallowed  # Redis answered the script: it ran
    assert caught.value.applied is None
    assert "had been sent and may have been applied" in str(caught.value), str(caught.value)
    assert await direct.get(StreamGetInput(**ITEM)) == APPLIED[operation]
    # the store goes on: its next write reconnects through the proxy
    await store.set(StreamSetInput(**ITEM, data={"n": 9}))
    assert await direct.get(StreamGetInput(**ITEM)) == {"n": 9}
