"""A PoolExhaustedError names the settings that size the pool and its wait in the forms the backend takes them: for
Redis the URL options (what an engine's store URL or ``redis_url`` can set) and the keyword arguments; for SQL the
keyword arguments alone, since a database URL's query goes to the driver. The names it gives are checked against
what the URL parser and ``from_url`` really accept.

Before: the Redis message said "raise max_connections or pool_timeout", keyword names only, though an engine user
sets the wait as ``?timeout=`` (``?pool_timeout=`` is handed to every connection as an unknown option); the SQL
message named no setting at all.

A SQL store's callers no longer get it from a full pool: they wait within their own time limit (72ce5adc).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from iii.stream import StreamGetInput
from iii_streams import PoolExhaustedError, SQLStream, StreamTimeoutError
from iii_streams.redis import waiting_client
from tests.services import require_redis

pytestmark = pytest.mark.timeout(30)


@pytest.mark.redis
async def test_the_redis_message_names_the_url_options_the_url_parser_takes() -> None:
    url = require_redis()
    client = waiting_client(f"{url}?max_connections=1&timeout=0.1")
    pool: Any = client.connection_pool
    held = await pool.get_connection()
    try:
        with pytest.raises(PoolExhaustedError) as exhausted:
            await client.ping()
    finally:
        await pool.release(held)
        await client.aclose()
    message = str(exhausted.value)
    assert "all 1 connections stayed busy for 0.1 s" in message
    named = dict(re.findall(r"\?(\w+)=(\w+)", message))
    assert set(named) == {"max_connections", "timeout"}, message
    # the URL options it names size the pool and its wait
    sized = waiting_client(f"{url}?max_connections=3&timeout=2.5")
    assert (sized.connection_pool.max_connections, sized.connection_pool.timeout) == (3, 2.5)  # type: ignore[attr-defined]
    await sized.aclose()
    # and so do the keyword arguments it names
    assert "keyword arguments max_connections and pool_timeout" in message, message
    keyed = waiting_client(url, max_connections=4, pool_timeout=1.5)
    assert (keyed.connection_pool.max_connections, keyed.connection_pool.timeout) == (4, 1.5)  # type: ignore[attr-defined]
    await keyed.aclose()


async def test_a_sql_caller_waits_past_pool_timeout_within_its_own_time_and_the_pool_options_reach_the_pool(
        tmp_path: Path) -> None:
    # A pool that runs out makes callers wait, never fail: past pool_timeout (0.2 s) the get goes on waiting, and
    # only its own time limit (0.5 s) ends it, with the store's usual timeout error (before 72ce5adc:
    # PoolExhaustedError at 0.2 s).
    url = f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}"
    async with SQLStream.from_url(url, create=True, pool_size=1, max_overflow=0, pool_timeout=0.2) as store:
        await store.prepare()
        async with store.engine.connect():  # the pool's only connection
            started = time.monotonic()
            with pytest.raises(StreamTimeoutError) as timed_out:
                await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i"), timeout=0.5)
            waited = time.monotonic() - started
    assert not isinstance(timed_out.value, PoolExhaustedError)
    assert waited >= 0.45, waited
    # the names it gives are what from_url takes
    async with SQLStream.from_url(url, pool_size=2, max_overflow=0, pool_timeout=0.5) as sized:
        pool: Any = sized.engine.pool
        assert (pool.size(), pool.timeout()) == (2, 0.5)
