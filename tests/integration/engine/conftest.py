"""The engine-core tests run on an engine with no optional modules, so other modules' built-ins never show up
in the listings they check."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from iii_engine import Engine, EngineConfig


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    """An in-process engine on a free port with only the worker module."""
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[])) as running:
        yield running
