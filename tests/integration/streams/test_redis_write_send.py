"""RedisStream's write scripts are sent without redis-py's per-send ``asyncio.wait_for`` (a task, a timer and one
more event-loop turn per command: about 50 µs of a one-at-a-time update's ~300 µs of CPU here); the store's
deadline bounds the send, the reply is still read under the socket timeout, and the connection keeps its
socket timeout for everything else."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis.asyncio.connection as aioredis_connection

from iii.stream import StreamDeleteInput, StreamSetInput, StreamUpdateInput, UpdateIncrement
from iii_streams import RedisStream
from tests.integration.streams.sent_commands import commands
from tests.services import require_redis


async def test_writes_skip_the_send_wait_for_and_keep_the_socket_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    url = require_redis()
    sends: list[tuple[bytes, float | None]] = []  # (command, the connection's socket timeout while it was sent)
    real_send = aioredis_connection.AbstractConnection.send_packed_command

    async def spied(self: aioredis_connection.AbstractConnection, command: Any, *args: Any, **kwargs: Any) -> None:
        sends.extend((sent[0].upper(), self.socket_timeout) for sent in commands(command))
        await real_send(self, command, *args, **kwargs)

    monkeypatch.setattr(aioredis_connection.AbstractConnection, "send_packed_command", spied)
    stream = f"send-{uuid.uuid4().hex[:8]}"
    item = {"stream_name": stream, "group_id": "g", "item_id": "i"}
    increment = StreamUpdateInput(**item, ops=[UpdateIncrement(path="n", by=1)])
    async with RedisStream.from_url(url, channel=f"send-events-{uuid.uuid4().hex[:8]}") as store:
        try:
            await store.set(StreamSetInput(**item, data={"n": 1}))
            results = await asyncio.gather(*(store.update(increment) for _ in range(5)))
            assert sorted(r.new_value["n"] for r in results) == [2, 3, 4, 5, 6]
            await store.update(increment)
            assert (await store.delete(StreamDeleteInput(**item))).old_value == {"n": 7}
            scripts = [timeout for name, timeout in sends if name == b"EVALSHA"]
            others = {timeout for name, timeout in sends if name != b"EVALSHA"}
            assert len(scripts) >= 3 and set(scripts) == {None}, sends  # sent without the send's wait_for
            assert others == {5}, sends  # SCRIPT LOAD, HMGET, ...: redis-py's default socket timeout as it was
            pool = store.client.connection_pool
            for conn in (*pool._available_connections, *pool._in_use_connections):
                assert conn.socket_timeout == 5  # restored after every write
        finally:
            await store.client.delete(f"stream:{stream}:g")
