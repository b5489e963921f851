"""The conformance suite against the stores that need no server: memory, fakeredis and SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import fakeredis
import pytest

from iii_streams import MemoryStream, RedisStream, SQLStream
from iii_streams.testing import StreamConformance


class TestMemoryStream(StreamConformance):
    @pytest.fixture
    async def stream(self) -> AsyncIterator[MemoryStream]:
        async with MemoryStream() as store:
            yield store


class TestFakeRedisStream(StreamConformance):
    exact_group_listing = True  # stream names are escaped in keys (issue #8): "a" and "a:b" stay apart

    @pytest.fixture
    async def stream(self) -> AsyncIterator[RedisStream]:
        client = fakeredis.FakeAsyncRedis()
        async with RedisStream(client) as store:
            yield store
        await client.aclose()


class TestSQLiteFileStream(StreamConformance):
    @pytest.fixture
    def stream_url(self, tmp_path: Path) -> str:
        return f"sqlite+aiosqlite:///{tmp_path / 'streams.db'}"

    @pytest.fixture
    async def stream(self, stream_url: str) -> AsyncIterator[SQLStream]:
        async with SQLStream.from_url(stream_url) as store:
            yield store


class TestSQLiteMemoryStream(StreamConformance):
    @pytest.fixture
    async def stream(self) -> AsyncIterator[SQLStream]:
        async with SQLStream.from_url("sqlite+aiosqlite://") as store:
            yield store
