"""A SQLite file store runs in WAL with ``synchronous = NORMAL`` (a commit survives a crash of the process; the last
ones may be rolled back by an OS crash or power loss); a ``connect`` listener added after the store's own sets
``FULL`` for power-loss durability, as the README says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event, text

from iii.stream import StreamSetInput
from iii_streams.sql import SQLStream


async def _synchronous(store: SQLStream) -> int:
    async with store.engine.connect() as conn:
        return int((await conn.execute(text("PRAGMA synchronous"))).scalar_one())


async def test_wal_normal_by_default_and_full_with_a_listener(tmp_path: Path) -> None:
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}") as store:
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
        assert await _synchronous(store) == 1  # NORMAL
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}") as store:

        @event.listens_for(store.engine.sync_engine, "connect")
        def full(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.cursor().execute("PRAGMA synchronous = FULL")

        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
        assert await _synchronous(store) == 2  # FULL
