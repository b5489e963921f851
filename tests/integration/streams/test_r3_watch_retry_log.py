"""Watchers of a PostgreSQL store reconnecting while the database refuses connections log their failed attempts
rate-limited, with a count, not one warning per attempt.

Before: each watcher logged every attempt (backoff 0.05 s doubling to 2 s), so N watchers wrote a warning about
N/2 times a second for as long as the database stayed away: 10 watchers, 40 lines in the first two seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import make_url

from iii_streams import SQLStream
from tests.integration.streams.pg_database import admin, scratch_database
from tests.integration.streams.test_ast_pg_killed_connections import _terminate
from tests.polling import until
from tests.services import require_postgres

pytestmark = pytest.mark.timeout(30)

WATCHERS = 10


@pytest.fixture
def pg_url() -> Iterator[str]:
    with scratch_database(require_postgres()) as url:
        yield url


async def test_failed_reconnects_of_many_watchers_are_logged_rate_limited(
        pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    database = make_url(pg_url).database
    async with SQLStream.from_url(pg_url, pool_size=WATCHERS, max_overflow=0) as store:
        attempts = 0

        @event.listens_for(store.engine.sync_engine, "do_connect")
        def _count(*_args: Any) -> None:
            nonlocal attempts
            attempts += 1

        watches = [store.watch(stream_name="r3") for _ in range(WATCHERS)]
        for watch in watches:
            await watch.open()
        readers = [asyncio.ensure_future(anext(watch)) for watch in watches]
        await admin(require_postgres(), f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        try:
            with caplog.at_level(logging.WARNING, logger="iii_streams.sql"):
                assert await _terminate(pg_url, "LISTEN%") == 1  # one LISTEN connection shared by the watchers
                start = attempts
                await until(lambda: attempts - start >= 4)
                retries = [r for r in caplog.records if "unreachable" in r.getMessage()]
            assert 1 <= len(retries) <= 2, [r.getMessage() for r in retries]
            assert "failed" in retries[0].getMessage()
        finally:
            await admin(require_postgres(), f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            for watch in watches:
                await watch.aclose()
