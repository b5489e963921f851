"""``RedisStream.aclose()`` against a silent server returns in bounded time also outside the engine: the end of the
update batches (a batch in flight waits for its reply) and the closes of the command and watch pools each get
``_STOP_S``, then are cancelled and let go with a warning naming them.

Before: ``await self._updates.aclose()`` waited for the batch in flight for as long as its read could (with
``socket_timeout=None``, the store's own 60 s), and the pools' ``aclose()`` had no bound at all.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from iii.stream import StreamSetInput, StreamUpdateInput, UpdateIncrement
from iii_streams import RedisStream
from iii_streams import redis as redis_module
from tests.integration.streams.private_redis import PrivateRedis
from tests.integration.streams.test_attack_a3_redis_send import stopped
from tests.polling import until
from tests.services import require_redis

pytestmark = pytest.mark.timeout(30)

BOUND_S = 0.5


async def test_aclose_with_an_update_in_flight_on_a_stopped_server_ends_within_the_bound(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(redis_module, "_STOP_S", BOUND_S)
    with PrivateRedis(tmp_path) as server:
        await server.start()
        store = RedisStream.from_url(server.url, socket_timeout=None)  # reads wait for the store's own timeout
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data={"n": 0}))  # connected
        async with stopped(server):
            update = asyncio.create_task(store.update(StreamUpdateInput(
                stream_name="s", group_id="g", item_id="i", ops=[UpdateIncrement(path="n", by=1)])))
            batches = store._updates
            await until(lambda: len(batches) == 0 and bool(batches._runners))  # taken: its batch waits for Redis
            loop = asyncio.get_running_loop()
            began = loop.time()
            with caplog.at_level(logging.WARNING, logger="iii_streams"):
                await asyncio.wait_for(store.aclose(), 10)  # before: still waiting after 10 s
            took = loop.time() - began
            with pytest.raises(Exception):  # noqa: B017 (cut off: whichever error says so)
                await update
        assert took < 3 * BOUND_S, took
        assert "the end of the RedisStream update batches (RedisStream 'stream') did not end within" in caplog.text


@pytest.mark.parametrize("pool", ["_client", "_watch_client"])
async def test_a_pool_close_that_never_returns_is_let_go(
        pool: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    url = require_redis()
    monkeypatch.setattr(redis_module, "_STOP_S", BOUND_S)
    store = RedisStream.from_url(url)
    client = getattr(store, pool)
    real_close = client.aclose
    cancelled = asyncio.Event()

    async def silent_close() -> None:
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    monkeypatch.setattr(client, "aclose", silent_close)
    try:
        with caplog.at_level(logging.WARNING, logger="iii_streams"):
            await asyncio.wait_for(store.aclose(), 10)  # before: never returned
        await asyncio.wait_for(cancelled.wait(), 5)
        what = "command" if pool == "_client" else "watch"
        assert f"the close of the Redis {what} pool (RedisStream 'stream') did not end within" in caplog.text
    finally:
        await real_close()
