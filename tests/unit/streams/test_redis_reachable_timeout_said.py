"""A Redis start check that fails on the connection's own ``socket_timeout`` says that bound, not the check's
(attack on the engine's configuration: "no answer within 10 s" after 5.1 s, redis-py's socket_timeout)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from iii_streams.errors import StreamTimeoutError
from iii_streams.redis import check_reachable
from tests.integration.engine.test_inspect_timeout import _silent_tcp


async def test_a_silent_redis_is_said_to_time_out_on_the_socket_timeout_it_met() -> None:
    async with _silent_tcp() as url:
        client = aioredis.Redis.from_url(url.replace("ws://", "redis://"), socket_timeout=0.3)
        try:
            with pytest.raises(StreamTimeoutError) as failed:
                await check_reachable(client, timeout=10)
        finally:
            await client.aclose()
    assert "no answer within the connection's own timeout (socket_timeout 0.3 s)" in str(failed.value), failed.value


async def test_one_without_a_socket_timeout_is_said_to_time_out_on_the_check_s_bound() -> None:
    async with _silent_tcp() as url:
        client = aioredis.Redis.from_url(url.replace("ws://", "redis://"))
        try:
            with pytest.raises(StreamTimeoutError) as failed:
                await check_reachable(client, timeout=0.3)
        finally:
            await client.aclose()
    assert str(failed.value).endswith("no answer within 0.3 s"), failed.value
