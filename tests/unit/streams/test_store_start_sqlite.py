"""``SQLStream.prepare()`` on SQLite: a store that cannot work fails once, with one line naming the database file.

Before: nothing was checked when a store was opened; each operation failed later with ``SQLStream.set: database
unreachable: unable to open database file``, the path not named.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from iii.stream import StreamGetInput, StreamSetInput
from iii_streams.errors import SchemaMissingError, StreamUnavailableError
from iii_streams.sql import SQLStream


async def test_a_missing_directory_fails_at_open_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "s.db"
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}") as store:
        with pytest.raises(StreamUnavailableError) as failure:
            await store.prepare()
    message = str(failure.value)
    assert message == (f"cannot open SQLite database {path}: unable to open database file "
                       f"(directory {path.parent} does not exist)")
    assert not path.parent.exists()


async def test_a_relative_path_with_a_missing_directory_gets_the_four_slashes_hint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the relative path is resolved from here, where "tmp/x" does not exist
    async with SQLStream.from_url("sqlite+aiosqlite:///tmp/x/s.db") as store:
        with pytest.raises(StreamUnavailableError) as failure:
            await store.prepare()
    assert str(failure.value) == (
        "cannot open SQLite database tmp/x/s.db: unable to open database file (directory tmp/x does not exist; "
        "a relative path: use four slashes for an absolute one, sqlite+aiosqlite:////tmp/x/s.db)")


async def test_a_relative_path_whose_directory_exists_opens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    os.mkdir("here")
    async with SQLStream.from_url("sqlite+aiosqlite:///here/s.db") as store:
        await store.prepare()
    assert (tmp_path / "here" / "s.db").is_file()


async def test_without_create_a_file_with_no_schema_names_the_migrate_command(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    async with SQLStream.from_url(url, create=False) as store:
        with pytest.raises(SchemaMissingError) as failure:
            await store.prepare()
    assert str(failure.value) == (f"SQLite database {tmp_path / 's.db'} has no stream schema: "
                                  f"run `iii-streams migrate {url}`")


async def test_with_create_prepare_migrates_and_a_second_store_finds_the_schema(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    async with SQLStream.from_url(url) as store:  # create: the SQLite default
        await store.prepare()
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
    async with SQLStream.from_url(url, create=False) as checked:
        await checked.prepare()  # at the head revision: no error
        assert await checked.get(StreamGetInput(stream_name="s", group_id="g", item_id="i")) == 1


async def test_an_older_schema_revision_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import iii_streams.sql as sql

    url = f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    async with SQLStream.from_url(url) as store:
        await store.prepare()
    # as if this version shipped a migration after the database's revision (only one exists today)
    monkeypatch.setattr(sql, "schema_behind", lambda revision: True)
    monkeypatch.setattr(sql, "head_revision", lambda: "0002_next")
    async with SQLStream.from_url(url, create=False) as store:
        with pytest.raises(SchemaMissingError) as failure:
            await store.prepare()
    assert str(failure.value) == (f"SQLite database {tmp_path / 's.db'} has the stream schema at revision "
                                  f"0001_stream_items, older than this version's 0002_next: "
                                  f"run `iii-streams migrate {url}`")
