"""``iii-streams migrate`` of a SQLite file in a directory that does not exist names the directory and, for a
relative path, the four-slash absolute URL, as the store's own errors do (it said only "unable to open database
file"); and that line is all of stderr: aiosqlite's thread of the failed open is done before the command's loop
closes (it answered on the closed loop later, in about 1 run of 10 here and 9 of 10 elsewhere, and printed
"RuntimeError: Event loop is closed" with two tracebacks after the line)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from iii_streams import cli, migrate
from tests.unit.streams.held_stop import CHILD_PRELUDE, HeldStop, hold_stops

pytestmark = pytest.mark.timeout(30)

URL = "sqlite+aiosqlite:///nodir/x.db"
LINE = ("iii-streams: cannot migrate sqlite+aiosqlite:///nodir/x.db: unable to open database file "
        "(directory nodir does not exist; a relative path: use four slashes for an absolute one, "
        "sqlite+aiosqlite:////nodir/x.db)")
_HELD_CLI = CHILD_PRELUDE + """
from iii_streams.__main__ import main
sys.argv = ["iii-streams", *sys.argv[1:]]
raise SystemExit(main())
"""


@pytest.fixture
def held_stops(monkeypatch: pytest.MonkeyPatch) -> type[HeldStop]:
    return hold_stops(monkeypatch)


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_missing_directory_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["migrate", URL]) == 1
    err = capsys.readouterr().err.strip()
    assert err == LINE, err
    assert not (tmp_path / "nodir").exists()


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("command", ["migrate", "current"])
def test_the_failed_open_s_thread_ends_before_the_loop_closes(
        command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, held_stops: type[HeldStop],
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    # `current` refuses a file that does not exist before connecting: a directory exists and still fails to open
    # (the check that refuses a URL naming a directory before connecting is bypassed to get there)
    (tmp_path / "adir.db").mkdir()
    monkeypatch.setattr(migrate, "_check_not_directory", lambda url, shown: None)
    url = URL if command == "migrate" else "sqlite+aiosqlite:///adir.db"
    before = set(threading.enumerate())
    assert cli.main([command, url]) == 1
    left = [thread for thread in set(threading.enumerate()) - before if thread.is_alive()]
    for thread in left:
        thread.join(10)  # so that its error, if any, is this test's
    assert held_stops.held == 1
    assert [thread.name for thread in left] == [], "aiosqlite's thread outlived the command's event loop"
    assert capsys.readouterr().err.count("\n") == 1


def test_the_console_script_writes_one_line(tmp_path: Path) -> None:
    """The command as a user runs it: once with the driver's stop held, twice as it comes; all at once (each imports
    SQLAlchemy and Alembic: about 1 s of CPU; more runs cost a loaded machine more than they find)."""
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    runs = [[sys.executable, "-c", _HELD_CLI, "migrate", URL]]
    runs += [[sys.executable, "-m", "iii_streams", "migrate", URL]] * 2
    children = [subprocess.Popen(run, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for run in runs]
    results = [(child.communicate(timeout=25), child.returncode) for child in children]
    for index, ((out, err), code) in enumerate(results):
        assert (code, err) == (1, LINE + "\n"), (index, code, err)
        assert out == ("stop held\n" if index == 0 else ""), (index, out)
