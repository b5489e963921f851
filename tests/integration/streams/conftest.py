"""Fixtures of the stream store tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.engine import make_url

from tests.services import require_postgres
from tests.stall_relay import Relay


@pytest.fixture
async def pg_relay() -> AsyncIterator[Relay]:
    """A bare TCP listener in front of the PostgreSQL server: it relays until told to go silent (``blackhole``)."""
    relayed = Relay(make_url(require_postgres()).port or 5432)
    await relayed.start()
    yield relayed
    await relayed.close()
