"""PostgreSQL stores at start: a database without our schema, or one that does not exist, stops the engine's start
with one line naming it (password masked); a connection the server refuses is worded as such, never as a refused
statement.

Before: the engine started on a database with no schema, then every call failed with ``table iii_stream_items does
not exist … run iii-streams migrate``; a missing database was ``StreamBackendError … the database refused the
statement: database "nosuchdb_zz" does not exist``.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Iterator

import pytest

from iii.stream import StreamGetInput, StreamSetInput
from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.base import ModuleStartError
from iii_streams.errors import StreamUnavailableError
from iii_streams.sql import SQLStream
from tests.integration.engine.test_startup_trust import STREAM
from tests.integration.streams.pg_database import admin, database_url
from tests.services import require_postgres

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(30),
              pytest.mark.our_engine("start-up failures of our engine's SQL stores")]

STATE = "modules::state::StateModule"


def _with_password(url: str) -> str:
    """``url`` with a password the server does not check (trust), to see it masked."""
    masked = url.replace("postgres@", "postgres:s3cret@", 1)
    assert ":s3cret@" in masked
    return masked


@pytest.fixture
def unmigrated_url() -> Iterator[str]:
    """A new database with no stream schema, dropped afterwards."""
    server = require_postgres()
    name = f"test_store_start_{uuid.uuid4().hex[:12]}"
    asyncio.run(admin(server, f'CREATE DATABASE "{name}"'))
    try:
        yield _with_password(database_url(server, name))
    finally:
        asyncio.run(admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _engine(module: str, url: str) -> Engine:
    settings: dict[str, object] = {"store_url": url}
    if module == STREAM:
        settings |= {"host": "127.0.0.1", "port": 0}
    return Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(module, settings)]))


@pytest.mark.parametrize("module", [STREAM, STATE])
async def test_a_database_without_the_schema_stops_the_start(unmigrated_url: str, module: str) -> None:
    engine = _engine(module, unmigrated_url)
    with pytest.raises(ModuleStartError) as failure:
        await engine.start()
    masked = unmigrated_url.replace(":s3cret@", ":***@")
    assert failure.value.reason == (f"PostgreSQL database {masked} has no stream schema: "
                                    f"run `iii-streams migrate {masked}` (with the real password in place of ***)")
    assert "s3cret" not in str(failure.value) and "\n" not in str(failure.value)
    assert engine.modules == {} and not engine.ready.is_set()


async def test_a_store_told_to_create_migrates_at_prepare(unmigrated_url: str) -> None:
    async with SQLStream.from_url(unmigrated_url, create=True) as store:
        await store.prepare()
    async with SQLStream.from_url(unmigrated_url) as checked:  # create=False, PostgreSQL's default
        await checked.prepare()
    async with _engine(STATE, unmigrated_url) as engine:  # and the engine starts on it
        assert engine.module("state") is not None


async def test_a_refused_connection_names_the_database_for_every_operation() -> None:
    """Before: ``backend unreachable: [Errno 111] Connect call failed ('127.0.0.1', N)``, no database named."""
    with socket.socket() as bound:  # bound, not listening: connections to it are refused, and no one takes the port
        bound.bind(("127.0.0.1", 0))
        url = _with_password(database_url(f"postgresql://postgres@127.0.0.1:{bound.getsockname()[1]}/x", "app"))
        masked = url.replace(":s3cret@", ":***@")
        async with SQLStream.from_url(url) as store:
            with pytest.raises(StreamUnavailableError) as at_call:
                await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i"))
            with pytest.raises(StreamUnavailableError) as at_watch:
                async with store.watch():
                    pass
    for failure, operation in ((at_call, "get"), (at_watch, "watch")):
        text = str(failure.value)
        assert text.startswith(f"SQLStream.{operation}: database unreachable: "), text
        assert text.endswith(f" (PostgreSQL database {masked})"), text
        assert "s3cret" not in text and "\n" not in text


async def test_a_missing_database_is_unreachable_not_a_refused_statement() -> None:
    name = f"test_store_start_missing_{uuid.uuid4().hex[:8]}"
    url = _with_password(database_url(require_postgres(), name))
    masked = url.replace(":s3cret@", ":***@")
    async with SQLStream.from_url(url) as store:
        with pytest.raises(StreamUnavailableError) as at_call:
            await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
        with pytest.raises(StreamUnavailableError) as at_watch:
            async with store.watch("s"):
                pass
        with pytest.raises(StreamUnavailableError) as at_open:
            await store.prepare()
    # named, password masked: the driver's text names no database for a refused connection
    named = f'database unreachable: database "{name}" does not exist (PostgreSQL database {masked})'
    assert str(at_call.value) == f"SQLStream.set: {named}; the write was not sent and not applied"
    assert at_call.value.applied is False
    # the watch's own LISTEN connection: before, StreamBackendError "…: InvalidCatalogNameError: database … "
    assert str(at_watch.value) == f"SQLStream.watch: {named}"
    assert str(at_open.value) == f'cannot open PostgreSQL database {masked}: database "{name}" does not exist'
    engine = _engine(STREAM, url)
    with pytest.raises(ModuleStartError) as failure:
        await engine.start()
    assert failure.value.reason == str(at_open.value)
    assert engine.modules == {}
