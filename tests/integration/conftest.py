"""Fixtures shared by the integration tests of the stores and of the engine's stream module."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from tests.integration.streams.pg_database import scratch_database
from tests.services import require_postgres, require_redis


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A migrated scratch PostgreSQL database for the test module that asks for it, dropped at the module's end
    (a module may define its own ``pg_url`` instead)."""
    with scratch_database(require_postgres()) as url:
        yield url


@pytest.fixture
async def redis_admin() -> AsyncIterator[aioredis.Redis]:
    """A plain client of the test Redis server, to look at (``CLIENT LIST``) or cut (``CLIENT KILL``) connections."""
    client = aioredis.Redis.from_url(require_redis())
    try:
        yield client
    finally:
        await client.aclose()
