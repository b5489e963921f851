"""The watch pool of ``RedisStream.from_url`` (cca52a1) and a URL holding the pool's own options: redis-py reads
``?max_connections=`` and ``?timeout=`` (the blocking pool's wait) from the URL, over the keyword options. They are
the command pool's; the watch pool took them too: a ``timeout`` went to each of its connections (every watch failed
with a TypeError while the writes worked), a ``max_connections=1`` failed a watch opened while the last one closed
("Too many connections": the closing subscriber still held its connection)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from iii.stream import StreamSetInput
from iii_streams import RedisStream
from iii_streams.events import Watch
from iii_streams.redis import KeyLayout
from tests.services import require_redis

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30)]


@pytest.fixture
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RedisStream]:
    name = f"rs21{uuid.uuid4().hex[:10]}"
    url = require_redis()
    url += ("&" if "?" in url else "?") + request.param
    async with RedisStream.from_url(url, layout=KeyLayout(name), channel=name, client_name=name) as opened:
        yield opened


@pytest.mark.parametrize("store", ["timeout=2"], indirect=True)
async def test_a_pool_wait_in_the_url_leaves_watches_working(store: RedisStream) -> None:
    assert store.client.connection_pool.timeout == 2  # still the command pool's
    async with store.watch(stream_name="s") as watch:
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="a", data=1))
        assert (await asyncio.wait_for(anext(watch), 5))["id"] == "a"


async def _open_after(watch: Watch, steps: int) -> None:
    for _ in range(steps):
        await asyncio.sleep(0)
    await watch.open()


@pytest.mark.parametrize("store", ["max_connections=1"], indirect=True)
async def test_a_watch_opened_while_the_last_one_closes_with_one_connection_in_the_url(store: RedisStream) -> None:
    assert store.client.connection_pool.max_connections == 1  # still the command pool's
    for turn in range(12):  # the new watch's subscribe at each point of the old one's close
        old = store.watch(stream_name="s")
        await old.open()
        new = store.watch(stream_name="s")

        try:
            await asyncio.gather(old.aclose(), _open_after(new, turn % 6))
            await store.set(StreamSetInput(stream_name="s", group_id="g", item_id=f"i{turn}", data=1))
            assert (await asyncio.wait_for(anext(new), 5))["id"] == f"i{turn}"
        finally:
            await new.aclose()
