"""A PostgreSQL store URL with its password in the query (``?password=``, which asyncpg reads) is masked in the
store's messages as one in ``user:password@`` is.

Before: SQLAlchemy's ``render_as_string(hide_password=True)`` hides only ``user:password@``, so
``StreamUnavailableError`` and ``SchemaMissingError`` showed ``?password=hunter2`` whole.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from iii.stream import StreamGetInput, StreamSetInput
from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.base import ModuleStartError
from iii_streams.errors import StreamUnavailableError
from iii_streams.sql import SchemaMissingError, SQLStream
from tests.integration.streams.pg_database import admin, database_url, scratch_database
from tests.services import require_postgres

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(30)]

SECRET = "hunter2"


def _with_query_password(url: str) -> str:
    """``url`` with a password in its query that the server does not check (trust)."""
    return f"{url}?password={SECRET}"


@pytest.fixture
def unmigrated_url() -> Iterator[str]:
    with scratch_database(require_postgres(), migrated=False) as url:
        yield _with_query_password(url)


@pytest.fixture
def migrated_url() -> Iterator[str]:
    with scratch_database(require_postgres()) as url:
        yield url


async def test_a_missing_database_masks_the_query_password() -> None:
    name = f"nosuchdb_{uuid.uuid4().hex[:8]}"
    url = _with_query_password(database_url(require_postgres(), name))
    masked = url.replace(f"password={SECRET}", "password=***")
    async with SQLStream.from_url(url) as store:
        with pytest.raises(StreamUnavailableError) as at_call:
            await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i"))
        with pytest.raises(StreamUnavailableError) as at_open:
            await store.prepare()
    assert str(at_call.value) == (f'SQLStream.get: database unreachable: database "{name}" does not exist '
                                  f"(PostgreSQL database {masked})")
    assert str(at_open.value) == f'cannot open PostgreSQL database {masked}: database "{name}" does not exist'


@pytest.mark.our_engine("start-up failure of our engine's SQL store")
async def test_a_database_without_the_schema_masks_the_query_password(unmigrated_url: str) -> None:
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[
        ModuleSpec("modules::state::StateModule", {"store_url": unmigrated_url})]))
    with pytest.raises(ModuleStartError) as failure:
        await engine.start()
    masked = unmigrated_url.replace(f"password={SECRET}", "password=***")
    # quoted for the shell (the '?'), and the reader told to put the password back, as for user:password@
    assert failure.value.reason == (f"PostgreSQL database {masked} has no stream schema: "
                                    f"run `iii-streams migrate '{masked}'` (with the real password in place of ***)")


async def test_a_table_dropped_under_an_open_store_masks_the_query_password(migrated_url: str) -> None:
    url = _with_query_password(migrated_url)
    async with SQLStream.from_url(url) as store:
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
        await admin(migrated_url.replace("+asyncpg", ""), "DROP TABLE iii_stream_items")
        with pytest.raises(SchemaMissingError) as failure:
            await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i"))
    masked = url.replace(f"password={SECRET}", "password=***")
    assert str(failure.value) == (f"table iii_stream_items does not exist in {masked}: "
                                  "run `iii-streams migrate URL` or open the store with create=True")
