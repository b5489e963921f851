"""Attack A3 on RedisStream's write sends (``_send``, c17921d) and its own EVALSHA packing (``_pack_evalsha``,
66e006b), against a real ``redis-server`` stopped with SIGSTOP (it then reads nothing and answers nothing).

- A store with no limit (``timeout=None``) had nothing left to end a send Redis does not read: the socket timeout
  was taken off the send, so a write larger than the socket buffers hung forever (before c17921d: the socket
  timeout ended it).
- The connection's health check (a ``PING`` sent from inside ``send_packed_command`` once the connection was idle
  for ``health_check_interval``) was read while the socket timeout was off: with no store limit it hung forever,
  with one it waited the store's whole limit instead of the socket timeout.
- ``_pack_evalsha`` refused every argument that is not exactly ``str``/``bytes``/``int`` with ``TypeError``: an
  item id that is a ``str`` subclass (a ``StrEnum``), which ``update_parsed`` passes on unvalidated, failed an
  update that redis-py's ``pack_command`` sent fine.
- (Older, found on the way) with a client made with ``decode_responses=True`` (``RedisStream`` takes any
  ``redis.asyncio.Redis``), ``list_groups`` and ``list_all`` failed with ``AttributeError`` (they decoded keys that
  were text already); the writes, which read replies as text too, worked.
"""

from __future__ import annotations

import asyncio
import enum
import os
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection

from iii.stream import (
    StreamDeleteInput,
    StreamGetInput,
    StreamListGroupsInput,
    StreamListInput,
    StreamSetInput,
    StreamUpdateInput,
    UpdateIncrement,
)
from iii.stream_ops import parse_ops
from iii_streams import RedisStream, StreamTimeoutError
from iii_streams.redis import KeyLayout, _pack_evalsha
from tests.integration.streams.private_redis import PrivateRedis
from tests.services import require_redis

pytestmark = pytest.mark.timeout(30)

ITEM = {"stream_name": "s", "group_id": "g", "item_id": "i"}


@asynccontextmanager
async def stopped(server: PrivateRedis) -> AsyncIterator[None]:
    """``server`` stopped (SIGSTOP: its sockets stay open, nothing is read or answered) until the block ends."""
    proc = server._proc
    assert proc is not None
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(proc.pid, signal.SIGCONT)


async def fails_within(seconds: float, call: Awaitable[Any]) -> BaseException:
    """The exception ``call`` ends with, which must come within ``seconds`` (a hang fails the test)."""
    task = asyncio.ensure_future(call)
    done, _ = await asyncio.wait([task], timeout=seconds)
    if not done:
        task.cancel()
        pytest.fail(f"still waiting after {seconds} s: the send is not bounded")
    exc = task.exception()
    assert exc is not None, "the write succeeded against a stopped Redis"
    return exc


async def test_a_send_redis_does_not_read_ends_at_the_socket_timeout_when_the_store_has_no_limit(
        tmp_path: Path) -> None:
    with PrivateRedis(tmp_path) as server:
        await server.start()
        # no health check due: the send itself must be what ends
        async with RedisStream.from_url(server.url, timeout=None, socket_timeout=0.5) as store:
            await store.set(StreamSetInput(**ITEM, data=1))
            big = "x" * (64 << 20)  # far more than the socket buffers hold: the send blocks
            async with stopped(server):
                exc = await fails_within(8, store.set(StreamSetInput(**ITEM, data=big)))
            assert isinstance(exc, StreamTimeoutError), repr(exc)


@pytest.mark.parametrize("store_timeout", [None, 20.0])
async def test_the_health_check_ping_is_read_under_the_socket_timeout(tmp_path: Path,
                                                                      store_timeout: float | None) -> None:
    with PrivateRedis(tmp_path) as server:
        await server.start()
        async with RedisStream.from_url(server.url, timeout=store_timeout, socket_timeout=0.5,
                                        health_check_interval=0.01) as store:
            await store.set(StreamSetInput(**ITEM, data=1))
            await asyncio.sleep(0.05)  # the connection idles past health_check_interval: the next send PINGs first
            async with stopped(server):
                exc = await fails_within(5, store.set(StreamSetInput(**ITEM, data=2)))
            assert isinstance(exc, StreamTimeoutError), repr(exc)
            assert "Timeout reading" in str(exc)  # the PING's reply, after the socket timeout (not the store's)
            assert await store.get(StreamGetInput(**ITEM)) == 1  # a new connection; the write never ran


class Kind(enum.StrEnum):
    A = "a"


class Count(enum.IntEnum):
    ONE = 1


@pytest.mark.parametrize("options", [{}, {"encoding": "latin-1"}, {"encoding": "utf-8", "encoding_errors": "replace"},
                                     {"decode_responses": True}])
def test_pack_evalsha_sends_what_pack_command_sends(options: dict[str, Any]) -> None:
    conn = Connection(**options)
    args: list[Any] = ["", "plain", "é", "ü" if options.get("encoding") == "latin-1" else "日本\U0001f600",
                       b"", b"\x00\xff", 0, -1, 2**70, -(2**63), 1.5, Kind.A, Count.ONE, memoryview(b"mv"),
                       "x" * 70_000, b"y" * 70_000]
    expected = b"".join(bytes(part) for part in conn.pack_command("EVALSHA", "f" * 40, 1, "stream:s:g", *args))
    assert _pack_evalsha(conn, "f" * 40, "stream:s:g", args) == expected


async def test_an_update_of_an_item_id_given_as_a_str_subclass() -> None:
    url = require_redis()
    stream = f"a3-send-{uuid.uuid4().hex[:8]}"
    async with RedisStream.from_url(url, channel=f"a3-send-{uuid.uuid4().hex[:8]}") as store:
        try:
            result = await store.update_parsed(stream, "g", Kind.A, parse_ops([{"type": "increment", "path": "n",
                                                                                "by": 1}]))
            assert result.new_value == {"n": 1}
            assert await store.get(StreamGetInput(stream_name=stream, group_id="g", item_id="a")) == {"n": 1}
        finally:
            await store.client.delete(f"stream:{stream}:g")


async def test_every_operation_with_a_client_that_decodes_responses() -> None:
    url = require_redis()
    prefix, stream = f"a3-{uuid.uuid4().hex[:8]}", "s:é"
    client = aioredis.Redis.from_url(url, decode_responses=True)
    item = {"stream_name": stream, "group_id": "g:1", "item_id": "ü"}
    increment = StreamUpdateInput(**item, ops=[UpdateIncrement(path="n", by=1)])
    try:
        async with RedisStream(client, layout=KeyLayout(prefix), channel=prefix) as store:
            await store.set(StreamSetInput(**item, data={"n": 1, "t": "日本"}))
            await store.update(increment)
            assert (await store.update(increment)).new_value == {"n": 3, "t": "日本"}
            assert await store.get(StreamGetInput(**item)) == {"n": 3, "t": "日本"}
            assert await store.list(StreamListInput(stream_name=stream, group_id="g:1")) == [{"n": 3, "t": "日本"}]
            assert await store.list_groups(StreamListGroupsInput(stream_name=stream)) == ["g:1"]
            assert await store.list_all() == [(stream, ["g:1"])]
            assert (await store.delete(StreamDeleteInput(**item))).old_value == {"n": 3, "t": "日本"}
    finally:
        await client.delete(KeyLayout(prefix).key(stream, "g:1"))
        await client.aclose()
