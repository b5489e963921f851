"""A SQLite store that cannot open (a file in a directory that does not exist) fails its watch as it fails its reads
and writes: ``StreamUnavailableError``, one line naming the file.

Before: the watch opened (SQLite's watches are in-process and touched no file) and waited for events that no write
could ever make; get/set said ``database unreachable: unable to open database file`` without naming the file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from iii.stream import StreamGetInput, StreamSetInput
from iii_streams.errors import StreamUnavailableError
from iii_streams.sql import SQLStream
from iii_streams.sqlite_threads import sqlite_threads

pytestmark = pytest.mark.timeout(30)


async def test_a_watch_on_a_file_in_a_missing_directory_fails_like_get_and_set(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "s.db"
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}") as store:
        with pytest.raises(StreamUnavailableError) as at_watch:
            async with store.watch("s"):
                pass
        with pytest.raises(StreamUnavailableError) as at_get:
            await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i"))
        with pytest.raises(StreamUnavailableError) as at_set:
            await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
    why = (f"database unreachable: unable to open database file (SQLite database {path}; "
           f"directory {path.parent} does not exist)")
    assert str(at_watch.value) == f"SQLStream.watch: {why}"
    assert str(at_get.value) == f"SQLStream.get: {why}"
    assert str(at_set.value) == f"SQLStream.set: {why}; the write was not sent and not applied"


@pytest.mark.parametrize("operation", ["watch", "set"])
async def test_a_first_operation_that_cannot_open_leaves_no_driver_thread(tmp_path: Path, operation: str) -> None:
    """Before: the driver's thread was still answering on the caller's loop, and printed "Event loop is closed" when
    the program closed it right after (as prepare() already waited for)."""
    before = sqlite_threads()
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 's.db'}") as store:
        with pytest.raises(StreamUnavailableError):
            if operation == "watch":
                await store.watch().open()
            else:
                await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
        assert sqlite_threads() - before == set()


async def test_a_watch_on_a_new_file_opens_and_sees_the_writes(tmp_path: Path) -> None:
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{tmp_path / 's.db'}") as store, store.watch("s") as events:
        assert (tmp_path / "s.db").exists()  # the watch opened the store (created and migrated it)
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
        assert (await anext(events))["event"] == {"type": "create", "data": 1}
