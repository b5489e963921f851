"""``iii-streams`` says what is wrong with its arguments in one line, exit status 2: a URL whose port is not a number
(it printed a traceback, exit 1) and a ``--revision`` this version does not ship (the error blamed the database's
version table, exit 1). A SQLite ``file:`` URI's missing directory is named as it is, not as a relative path."""

from __future__ import annotations

from pathlib import Path

import pytest

from iii_streams.cli import main
from iii_streams.sql import missing_directory_hint


@pytest.mark.parametrize("url", ["postgresql+asyncpg://postgres:s3cretPW@127.0.0.1:abc/x",
                                 "postgresql://postgres:s3cretPW@[::1/x"])
def test_a_url_that_cannot_be_parsed_is_a_usage_error(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("iii-streams: not a valid database URL: ") and err.count("\n") == 1
    assert "s3cretPW" not in err and "***" in err


@pytest.mark.parametrize("revision", ["bogus", "-1", "+1", "head:sql", ""])
def test_an_unknown_revision_is_a_usage_error(revision: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", f"sqlite:///{tmp_path}/s.db", "--revision", revision]) == 2
    err = capsys.readouterr().err
    assert f"--revision {revision!r} is not a revision of this version" in err and "0001_stream_items" in err
    assert not (tmp_path / "s.db").exists()  # refused before anything was opened


def test_a_shipped_revision_or_its_start_is_taken(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", f"sqlite:///{tmp_path}/s.db", "--revision", "0001"]) == 0
    assert "to 0001_stream_items" in capsys.readouterr().out


def test_a_file_uri_names_its_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nodir"
    assert missing_directory_hint(f"sqlite+aiosqlite:///file:{missing}/x.db?mode=ro&uri=true") == \
        f" (directory {missing} does not exist)"
    assert missing_directory_hint(f"sqlite+aiosqlite:///file:{tmp_path}/x.db?mode=ro&uri=true") == ""
    assert missing_directory_hint("postgresql://a@h:x/y") == ""  # (never raises: a hint is added to an error)
