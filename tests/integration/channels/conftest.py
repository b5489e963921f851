"""Fixtures shared by the channel tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from iii import III


@pytest.fixture
async def worker(engine_url: str) -> AsyncIterator[III]:
    """A connected SDK client of the test's engine, shut down after the test."""
    client = III(engine_url)
    await client.connect_async()
    yield client
    await client.shutdown_async()
