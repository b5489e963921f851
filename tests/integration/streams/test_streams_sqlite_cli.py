"""The ``iii-streams`` command and SQLite's automatic migration."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from iii.stream import StreamGetInput, StreamSetInput
from iii_streams import SQLStream, open_stream
from iii_streams.cli import main
from iii_streams.sql import SchemaMissingError


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_cli_migrate_creates_schema_and_is_idempotent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "s.db"
    url = f"sqlite+aiosqlite:///{db}"
    assert main(["migrate", url]) == 0
    assert main(["migrate", url]) == 0
    assert {"iii_stream_items", "iii_streams_alembic_version"} <= _tables(db)
    assert main(["current", url]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "0001_stream_items"


def test_console_script_entry_reports_errors_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "iii_streams.cli", "migrate", "mysql://nobody@nowhere/x"],
        capture_output=True, text=True, timeout=25,
    )
    assert proc.returncode == 2  # an unsupported URL is a usage error
    assert proc.stderr.startswith("iii-streams: unsupported database URL scheme 'mysql'")
    assert "Traceback" not in proc.stderr


async def test_sqlite_migrates_automatically_and_persists(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'auto.db'}"
    async with open_stream(url) as store:
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data={"kept": [1, 2**70]}))
    async with SQLStream.from_url(url, create=False) as again:
        assert await again.get(StreamGetInput(stream_name="s", group_id="g", item_id="i")) == {"kept": [1, 2**70]}


async def test_sqlite_without_create_names_the_fix(tmp_path: Path) -> None:
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{tmp_path / 'bare.db'}", create=False) as store:
        with pytest.raises(SchemaMissingError, match="iii-streams migrate URL"):
            await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i"))
