"""SQLStream against a real PostgreSQL: a database created for this run (``iii_test_<random>``), migrated with
``iii-streams migrate``, the conformance suite, LISTEN/NOTIFY, and dropped afterwards."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from iii.stream import StreamGetInput, StreamSetInput
from iii_streams import SQLStream
from iii_streams.sql import SchemaMissingError
from iii_streams.testing import StreamConformance
from tests.integration.streams.pg_database import scratch_database
from tests.services import require_postgres

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_server() -> str:
    return require_postgres()


@pytest.fixture(scope="module")
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh database for this module, migrated through the command-line tool, dropped at the end."""
    with scratch_database(pg_server) as url:
        yield url


class TestPostgresStream(StreamConformance):
    @pytest.fixture
    def stream_url(self, pg_url: str) -> str:
        return pg_url

    @pytest.fixture
    async def stream(self, pg_url: str) -> AsyncIterator[SQLStream]:
        async with SQLStream.from_url(pg_url, pool_size=10) as store:
            yield store


async def test_watch_sees_writes_from_another_store(pg_url: str) -> None:
    stream_name = f"cross-{uuid.uuid4().hex[:8]}"
    async with SQLStream.from_url(pg_url) as watcher, SQLStream.from_url(pg_url) as writer:
        async with watcher.watch(stream_name=stream_name) as events:
            await writer.set(StreamSetInput(stream_name=stream_name, group_id="g", item_id="1", data={"a": 1}))
            event = await asyncio.wait_for(anext(events), 10)
    assert event["event"] == {"type": "create", "data": {"a": 1}}


def test_unmigrated_database_names_the_fix(pg_server: str) -> None:
    async def probe(url: str) -> None:
        async with SQLStream.from_url(url) as store:
            with pytest.raises(SchemaMissingError, match="iii-streams migrate"):
                await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i"))

    with scratch_database(pg_server, migrated=False) as url:
        asyncio.run(probe(url))
