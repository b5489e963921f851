"""Watchers of a Redis store re-subscribing while Redis refuses them log their failed attempts rate-limited,
with a count, not one warning per attempt (as the PostgreSQL store's, test_r3_watch_retry_log).

Before: each watcher logged every attempt (backoff 0.05 s doubling to 2 s), so N watchers wrote a warning about
N/2 times a second for as long as Redis stayed away. Redis here is reached through a proxy of this test that,
once told to, cuts its connections and then hangs up on every new one (counted): the shared server is untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from urllib.parse import urlsplit

import pytest

from iii_streams import RedisStream
from iii_streams.redis import KeyLayout
from tests.polling import until
from tests.services import require_redis

pytestmark = pytest.mark.timeout(30)

WATCHERS = 10


class _CuttableProxy:
    """Forwards TCP to Redis until ``cut()``; then every connection is closed at once, and counted."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.refusing = False
        self.refused = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    def cut(self) -> None:
        self.refusing = True
        for writer in list(self._writers):
            writer.close()

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            self.refused += 1
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers.update((writer, up_writer))

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        tasks = [asyncio.ensure_future(pump(reader, up_writer)), asyncio.ensure_future(pump(up_reader, writer))]
        self._tasks.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_failed_resubscribes_of_many_watchers_are_logged_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    target = urlsplit(require_redis())
    proxy = _CuttableProxy(target.hostname or "127.0.0.1", target.port or 6379)
    url = await proxy.start()
    store = RedisStream.from_url(url, layout=KeyLayout(f"r3rl{uuid.uuid4().hex[:10]}"),
                                 channel=f"r3rl{uuid.uuid4().hex[:10]}")
    watches = [store.watch() for _ in range(WATCHERS)]
    readers: list[asyncio.Future[object]] = []
    try:
        for watch in watches:
            await watch.open()
        readers = [asyncio.ensure_future(anext(watch)) for watch in watches]
        with caplog.at_level(logging.WARNING, logger="iii_streams.redis"):
            proxy.cut()
            await until(lambda: proxy.refused >= 4)
            retries = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert 1 <= len(retries) <= 2, [r.getMessage() for r in retries]
        assert "failed" in retries[0].getMessage()
    finally:
        for watch in watches:  # ends their retries first: a re-subscribing reader did not always end when cancelled
            await watch.aclose()
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await store.aclose()
        await proxy.close()
