"""Fixtures of the stream store tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.engine import make_url

from tests.services import require_postgres, require_redis
from tests.stall_relay import Relay


async def delete_redis_keys(match: str) -> None:
    """Delete the keys of the test Redis that match the glob ``match`` (a test's own prefix)."""
    import redis.asyncio as aioredis  # here: the PostgreSQL tests need no redis package

    raw = aioredis.Redis.from_url(require_redis())
    try:
        keys = [key async for key in raw.scan_iter(match=match, count=1000)]
        if keys:
            await raw.delete(*keys)
    finally:
        await raw.aclose()


@pytest.fixture
async def pg_relay() -> AsyncIterator[Relay]:
    """A bare TCP listener in front of the PostgreSQL server: it relays until told to go silent (``blackhole``)."""
    relayed = Relay(make_url(require_postgres()).port or 5432)
    await relayed.start()
    yield relayed
    await relayed.close()
