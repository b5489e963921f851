"""Fixtures shared by the module tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.otlp_collector import OtlpCollector


@pytest.fixture
async def otlp_collector() -> AsyncIterator[OtlpCollector]:
    """A local OTLP/HTTP collector answering each POST at once (set ``status`` or ``stall`` to change that)."""
    async with OtlpCollector() as collector:
        yield collector
