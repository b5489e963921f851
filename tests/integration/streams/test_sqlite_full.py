"""A SQLite database with no room left (SQLITE_FULL: a full disk, or its ``max_page_count`` reached) refuses the
write with ``StreamBackendError`` naming the database; it said ``StreamUnavailableError … database unreachable``,
though the database had answered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from iii.stream import StreamSetInput
from iii_streams import SQLStream, StreamBackendError

pytestmark = pytest.mark.timeout(30)


async def test_a_full_database_refuses_the_write(tmp_path: Path) -> None:
    path = tmp_path / "full.db"
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}", create=True) as store:
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="small", data=1))

        def no_room(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA page_count")
            pages = cursor.fetchone()[0]
            cursor.execute(f"PRAGMA max_page_count = {pages}")  # what a full disk does: no page more
            cursor.close()

        event.listen(store.engine.sync_engine, "connect", no_room)
        await store.engine.dispose()  # the next connection is made with the hook
        with pytest.raises(StreamBackendError) as failure:
            await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="big", data="x" * 1_000_000))
    assert "the database refused the write" in str(failure.value), str(failure.value)
    assert "database or disk is full" in str(failure.value) and str(path) in str(failure.value)
