"""RedisStream.list_text(max_bytes=...) refuses a group over the bound without summing every item in its script: a
Lua script blocks every client of the server while it runs. Counted with the private server's command statistics
(commands a script calls count there), not timed.

Before: the script ran HKEYS and one HSTRLEN per item, then compared: 1,000,000 small items under a 1 MiB bound
took 3.4-3.8 s to refuse (PING from any other client waited as long), and 1,700,000 made other clients fail with
BUSY while the caller had timed out. Now a group of n items (at least 2n + 1 bytes) over the bound is refused from
HLEN alone, and past its first 1,024 items (summed exactly, so a small group's error names its size) the sum stops
once past the bound.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from iii.stream import StreamListInput
from iii.wire import dumps, loads
from iii_streams import RedisStream
from iii_streams.errors import StreamTooLargeError
from tests.integration.streams.private_redis import PrivateRedis

pytestmark = pytest.mark.redis

GROUP = StreamListInput(stream_name="s", group_id="g")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    with PrivateRedis(tmp_path) as private:
        private._cmd += ["--appendonly", "no"]  # nothing to keep: no 200,000-item log to write
        await private.start()
        yield private


async def _fill(client: aioredis.Redis, count: int, value: str) -> None:
    for start in range(0, count, 10_000):
        await client.hset("stream:s:g", mapping={f"i{n}": value for n in range(start, min(count, start + 10_000))})


async def _calls(client: aioredis.Redis) -> dict[str, int]:
    stats = await client.info("commandstats")
    return {name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("hlen", "hkeys", "hstrlen",
                                                                                      "hvals")}


async def test_a_group_of_more_items_than_the_bound_allows_is_refused_from_its_length(server: PrivateRedis) -> None:
    async with RedisStream.from_url(server.url, publish_events=False) as store:
        await _fill(store.client, 200_000, "1")
        await store.client.config_resetstat()
        with pytest.raises(StreamTooLargeError) as info:
            await store.list_text(GROUP, max_bytes=100_000)
        assert info.value.size == 2 * 200_000 + 1 and info.value.max_bytes == 100_000  # "or more bytes"
        # no item looked at: the 200,000 HSTRLEN calls (and the HKEYS) before
        assert await _calls(store.client) == {"hlen": 1, "hkeys": 0, "hstrlen": 0, "hvals": 0}
        assert await store.client.ping()  # the server serves others


async def test_the_sum_stops_once_past_the_bound(server: PrivateRedis) -> None:
    value = dumps("x" * 48)  # 50 bytes
    async with RedisStream.from_url(server.url, publish_events=False) as store:
        await _fill(store.client, 20_000, value)
        await store.client.config_resetstat()
        with pytest.raises(StreamTooLargeError) as info:
            await store.list_text(GROUP, max_bytes=50_000)
        assert 50_000 < info.value.size < 20_000 * 51 + 1  # "or more": not the whole group's size
        calls = await _calls(store.client)
        # the first 1,024 items summed exactly (past the bound after about 600): not all 20,000
        assert calls["hstrlen"] == 1_024 and calls["hvals"] == 0, calls


async def test_a_small_group_over_the_bound_is_refused_with_its_whole_size(server: PrivateRedis) -> None:
    value = dumps("x" * 998)  # 1,000 bytes
    async with RedisStream.from_url(server.url, publish_events=False) as store:
        await _fill(store.client, 20, value)
        with pytest.raises(StreamTooLargeError) as info:
            await store.list_text(GROUP, max_bytes=5_000)
        assert info.value.size == 20 * 1_000 + 21


async def test_a_group_within_the_bound_is_read_whole(server: PrivateRedis) -> None:
    async with RedisStream.from_url(server.url, publish_events=False) as store:
        await _fill(store.client, 1_000, "12")
        text = await store.list_text(GROUP, max_bytes=3 * 1_000 + 1)  # exactly its size
        assert loads(text) == [12] * 1_000
        with pytest.raises(StreamTooLargeError):
            await store.list_text(GROUP, max_bytes=3 * 1_000)
