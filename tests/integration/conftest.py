"""Fixtures shared by the integration tests of the stores and of the engine's stream module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.streams.pg_database import scratch_database
from tests.services import require_postgres


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A migrated scratch PostgreSQL database for the test module that asks for it, dropped at the module's end
    (a module may define its own ``pg_url`` instead)."""
    with scratch_database(require_postgres()) as url:
        yield url
