"""Against the real Redis: a store URL whose database is a typo (``/l`` for ``/1``) or has extra slashes
(``/1/5``) is refused when the store or module is opened, before any key is written anywhere.

Before: ``open_stream("redis://127.0.0.1:6379/l")`` wrote to database 0 and ``…/1/5`` to database 15 with no word,
and the queue module with ``redis_url: redis://127.0.0.1:6379/abc`` started normally on database 0.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlparse

import pytest
import redis.asyncio as aioredis

from iii.stream import StreamSetInput
from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_streams import open_stream
from tests.services import require_redis

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30)]

async def _keys_everywhere(match: str, *, delete: bool = False) -> dict[int, int]:
    """How many keys match ``match`` in each database of the test server (deleted when ``delete``): wherever
    redis-py's reading of a mistyped URL could have put them."""
    server = urlparse(require_redis())
    host, port = server.hostname or "127.0.0.1", server.port or 6379
    first = aioredis.Redis(host=host, port=port, decode_responses=True)
    try:
        count = int((await first.config_get("databases")).get("databases") or 16)
    finally:
        await first.aclose()
    found: dict[int, int] = {}
    for db in range(count):
        raw = aioredis.Redis(host=host, port=port, db=db)
        try:
            keys = [key async for key in raw.scan_iter(match=match, count=1000)]
            if keys and delete:
                await raw.delete(*keys)
            found[db] = len(keys)
        finally:
            await raw.aclose()
    return found


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards from every database."""
    name = f"iii-dbtypo-{uuid.uuid4().hex[:10]}"
    yield name
    await _keys_everywhere(f"{name}*", delete=True)


@pytest.mark.parametrize("path", ["/l", "/1/5"])
async def test_a_store_on_a_mistyped_database_writes_nothing(prefix: str, path: str) -> None:
    require_redis()
    url = f"redis://:hunter2@127.0.0.1:6379{path}?key_prefix={prefix}"
    with pytest.raises(ValueError, match=r"the database of Redis URL 'redis://:\*\*\*@127\.0\.0\.1:6379") as raised:
        store = open_stream(url)
        try:  # reached only without the check: the write lands in whatever database redis-py picked
            await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data={"v": 1}))
        finally:
            await store.aclose()
    assert f"got '{path}'" in str(raised.value) and "hunter2" not in str(raised.value)
    assert sum((await _keys_everywhere(f"{prefix}*")).values()) == 0


async def test_the_queue_module_on_a_mistyped_database_does_not_start(prefix: str) -> None:
    require_redis()
    adapter = {"class": "modules::queue::RedisAdapter",
               "config": {"redis_url": "redis://127.0.0.1:6379/abc", "key_prefix": f"{prefix}:"}}
    config = EngineConfig(host="127.0.0.1", port=0, modules=[
        ModuleSpec("modules::queue::QueueModule", {"adapter": adapter, "queue_configs": {"q": {}}})])
    with pytest.raises(Exception) as raised:  # the engine's start error: one line naming the module and the URL
        async with Engine(config=config):
            pass
    message = str(raised.value)
    assert "modules::queue::QueueModule cannot start" in message, message
    assert "Redis URL 'redis://127.0.0.1:6379/abc'" in message and "got '/abc'" in message, message
    assert "\n" not in message
    assert sum((await _keys_everywhere(f"{prefix}*")).values()) == 0
