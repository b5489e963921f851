"""A migration or revision read on PostgreSQL cut by its bound while a connection is being set up closes that
connection before it returns.

Before (SQLAlchemy < 2.0.53, which leaves a connection open when a ``connect`` listener fails): the connection
stayed open with nothing referring to it, its socket closed by the garbage collector only ("ResourceWarning:
unclosed connection"), 3 of 3 runs against a server gone silent after its handshake. Here the set-up hangs in a
``connect`` listener of the test's (as SQLAlchemy's own would on a silent server).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import await_only

from iii_streams import migrate as migrate_module
from tests.integration.streams.pg_database import scratch_database
from tests.services import require_postgres

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def blank_db() -> Iterator[str]:
    with scratch_database(require_postgres(), migrated=False) as url:
        yield url


@pytest.mark.parametrize("call", ["upgrade", "revision_of"])
async def test_a_connect_cut_in_its_set_up_is_closed_before_the_call_returns(
        blank_db: str, monkeypatch: pytest.MonkeyPatch, call: str) -> None:
    made: list[Any] = []

    def hanging_engine(*args: Any, **kwargs: Any) -> AsyncEngine:
        engine = create_async_engine(*args, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def hang(dbapi_connection: Any, _record: Any) -> None:
            made.append(dbapi_connection)
            await_only(asyncio.sleep(30))  # the set-up never ends: the bound cuts it

        return engine

    monkeypatch.setattr(migrate_module, "create_async_engine", hanging_engine)
    with pytest.raises(TimeoutError, match=r"gave no result within 0\.5 s$"):
        await getattr(migrate_module, call)(blank_db, timeout=0.5)
    assert len(made) == 1
    assert made[0].driver_connection.is_closed()  # closed already, not left to the garbage collector
