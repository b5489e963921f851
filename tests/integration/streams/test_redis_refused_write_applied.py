"""A write Redis refuses before anything is written (out of memory under ``noeviction``, a read-only replica) says so:
``applied`` False, not "unknown" (attack on store failures: 3,348 refused writes each said ``applied=None``, so a
caller retrying only what was surely not applied retried none of them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from iii.stream import StreamGetInput, StreamSetInput
from iii_streams import RedisStream
from iii_streams.errors import StreamBackendError
from tests.integration.streams.private_redis import PrivateRedis

pytestmark = pytest.mark.redis


async def test_a_write_refused_for_memory_is_not_applied(tmp_path: Path) -> None:
    with PrivateRedis(tmp_path) as server:
        server._cmd += ["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]
        await server.start()
        async with RedisStream.from_url(server.url) as store:
            n = 0
            with pytest.raises(StreamBackendError) as info:
                while n < 10_000:  # until Redis refuses: 2 MB fill long before
                    await store.set(StreamSetInput(stream_name="s", group_id="g", item_id=f"i{n}", data="x" * 4096))
                    n += 1
            assert info.value.applied is False, info.value
            assert "nothing was applied" in str(info.value) and "maxmemory" in str(info.value)
            assert await store.get(StreamGetInput(stream_name="s", group_id="g", item_id=f"i{n}")) is None
