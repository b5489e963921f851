"""``iii-streams migrate`` of a SQLite file in a directory that does not exist names the directory and, for a
relative path, the four-slash absolute URL, as the store's own errors do (it said only "unable to open database
file")."""

from __future__ import annotations

from pathlib import Path

import pytest

from iii_streams import cli

pytestmark = pytest.mark.timeout(30)


def test_a_missing_directory_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["migrate", "sqlite+aiosqlite:///nodir/x.db"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("iii-streams: cannot migrate sqlite+aiosqlite:///nodir/x.db: unable to open database file "
                   "(directory nodir does not exist; a relative path: use four slashes for an absolute one, "
                   "sqlite+aiosqlite:////nodir/x.db)"), err
    assert not (tmp_path / "nodir").exists()
