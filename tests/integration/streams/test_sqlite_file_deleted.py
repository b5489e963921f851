"""A SQLite file deleted or replaced under an open store: its pooled connections kept the old file open and wrote to
it, every write answered "ok" and all of it was lost (the path names another file, or none). The store now checks the
file at each connection it takes (and again after each write's commit) and fails with an error naming the path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from iii.stream import StreamGetInput, StreamSetInput
from iii_streams import SQLStream, StreamBackendError
from tests.integration.streams.sqlite_statements import before_statements

pytestmark = pytest.mark.timeout(30)


def _set(item: str, data: object) -> StreamSetInput:
    return StreamSetInput(stream_name="s", group_id="g", item_id=item, data=data)


async def test_a_write_after_the_file_was_deleted_fails(tmp_path: Path) -> None:
    path = tmp_path / "gone.db"
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}", create=True) as store:
        await store.set(_set("a", 1))
        os.unlink(path)
        with pytest.raises(StreamBackendError) as caught:
            await store.set(_set("a", 2))  # (the remembered value: the single-statement path)
        assert f"the database file {path} was deleted or replaced while the store was open" in str(caught.value)
        with pytest.raises(StreamBackendError, match="was deleted or replaced"):
            await store.set(_set("new", 1))  # (a new item: the locking transaction)
        with pytest.raises(StreamBackendError, match="was deleted or replaced"):
            await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="a"))
    assert not path.exists()  # nothing made a new, empty file in its place


async def test_a_file_deleted_as_a_write_commits_fails_that_write(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "going.db"
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}", create=True) as store:
        await store.set(_set("a", 1))
        # after the check at the connection's checkout, before the commit
        before_statements(monkeypatch, "COMMIT", lambda: os.unlink(path))
        with pytest.raises(StreamBackendError) as caught:
            await store.set(_set("new", 1))  # (a new item: a transaction, which commits)
        assert f"this write was committed to the file that was at {path} when the store opened it" in str(caught.value)
        assert caught.value.applied is True


async def test_a_write_after_the_file_was_replaced_fails(tmp_path: Path) -> None:
    path = tmp_path / "replaced.db"
    other = tmp_path / "other.db"
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{other}", create=True) as store:
        await store.set(_set("a", "other"))
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}", create=True) as store:
        await store.set(_set("a", 1))
        os.replace(other, path)
        with pytest.raises(StreamBackendError, match=f"the database file {path} was deleted or replaced"):
            await store.set(_set("a", 2))
        with pytest.raises(StreamBackendError, match="was deleted or replaced"):
            await store.set(_set("b", 1))  # and every later one: the store stays failed


async def test_the_file_left_in_place_is_written(tmp_path: Path) -> None:
    path = tmp_path / "kept.db"
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}", create=True) as store:
        for n in range(3):
            await store.set(_set("a", n))
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}") as store:
        assert await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="a")) == 2
