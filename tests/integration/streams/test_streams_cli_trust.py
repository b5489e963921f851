"""Issue #8 "fail fast, say why" for ``iii-streams``: one line ``iii-streams: …`` on stderr, exit 2 for usage
errors and 1 for failures, never a traceback, never a password, and ``current`` never creates a database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.services import require_postgres

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[3]


def streams_cli(*args: str, pythonpath: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m iii_streams ARGS``."""
    path = os.pathsep.join(filter(None, [pythonpath, str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "iii_streams", *args], capture_output=True, text=True,
                          timeout=25, cwd=ROOT, env={**os.environ, "PYTHONPATH": path})


def one_error_line(proc: subprocess.CompletedProcess[str], status: int) -> str:
    assert proc.returncode == status, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("iii-streams: "), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    return lines[0]


def test_current_does_not_create_a_missing_sqlite_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    line = one_error_line(streams_cli("current", f"sqlite+aiosqlite:///{missing}"), 1)
    assert line == f"iii-streams: current: database file {missing} does not exist"
    assert not missing.exists()


def test_migrate_reports_what_it_did_and_an_up_to_date_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'streams.db'}"
    first = streams_cli("migrate", url)
    assert (first.returncode, first.stderr) == (0, "")
    assert first.stdout == f"migrated {url} from none to 0001_stream_items\n"
    again = streams_cli("migrate", url)
    assert (again.returncode, again.stdout) == (0, f"{url} is already at 0001_stream_items\n")
    current = streams_cli("current", url)
    assert (current.returncode, current.stdout) == (0, "0001_stream_items\n")


@pytest.mark.parametrize("how", ["trailing slash", "existing directory", "uri"])
def test_a_url_naming_a_directory_is_a_usage_error_and_creates_nothing(tmp_path: Path, how: str) -> None:
    """Before, ``migrate sqlite:////srv/data/`` "migrated" a new file named ``data`` beside the directory meant."""
    existing = tmp_path / "existing"
    existing.mkdir()
    url = {"trailing slash": f"sqlite:///{tmp_path / 'data'}/", "existing directory": f"sqlite:///{existing}",
           "uri": f"sqlite+aiosqlite:///file:{tmp_path / 'data'}/?uri=true"}[how]
    line = one_error_line(streams_cli("migrate", url), 2)
    assert line.startswith(f"iii-streams: database URL {url!r} names a directory, not a file"), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]


@pytest.mark.parametrize("url", ["sqlite:///file:streams?mode=memory&cache=shared&uri=true", "sqlite:///file:streams"])
def test_urls_that_name_no_directory_pass_beside_one_of_that_name(tmp_path: Path, url: str) -> None:
    """A named in-memory database, and ``file:`` without ``uri=true`` (a file named ``file:streams``), are no
    directory even where one named ``streams`` exists: the first version of the check refused both."""
    (tmp_path / "streams").mkdir()
    done = subprocess.run([sys.executable, "-m", "iii_streams", "migrate", url], capture_output=True, text=True,
                          timeout=25, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert done.stdout == f"migrated {url} from none to 0001_stream_items\n"


def test_migrate_to_a_revision_below_the_applied_one_fails_instead_of_claiming_it_is_there(tmp_path: Path) -> None:
    """Before, ``--revision base`` on a migrated database printed "is already at 0001_stream_items", exit 0, and
    downgraded nothing: there is no downgrade, and it says so."""
    url = f"sqlite:///{tmp_path / 'streams.db'}"
    assert streams_cli("migrate", url).returncode == 0
    line = one_error_line(streams_cli("migrate", url, "--revision", "base"), 1)
    assert line == (f"iii-streams: migrate: {url} is at 0001_stream_items, not at base: migrate only upgrades "
                    "(there is no downgrade)")
    same = streams_cli("migrate", url, "--revision", "0001")  # a revision's leading part names it, as in Alembic
    assert (same.returncode, same.stdout) == (0, f"{url} is already at 0001_stream_items\n")


@pytest.mark.parametrize(("args", "expected"), [
    (["migrate", "bad://x"], "iii-streams: unsupported database URL scheme 'bad' in 'bad://x'"),
    (["current", "mysql://app:s3cret@db/x"], "iii-streams: unsupported database URL scheme 'mysql' in "
                                              "'mysql://app:***@db/x'"),
    (["current", "streams.db"], "iii-streams: not a database URL: 'streams.db'"),
    ([], "iii-streams: the following arguments are required: a command (migrate or current)"),
    (["vacuum", "x"], "iii-streams: argument command: invalid choice: 'vacuum'"),
    (["migrate"], "iii-streams: the following arguments are required: url"),
])
def test_usage_errors_are_one_line_with_status_2(args: list[str], expected: str) -> None:
    line = one_error_line(streams_cli(*args), 2)
    assert line.startswith(expected) and "s3cret" not in line, line


def test_unreachable_server_masks_the_password() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    line = one_error_line(streams_cli("migrate", f"postgresql://app:s3cret@127.0.0.1:{closed}/db"), 1)
    assert line.startswith(f"iii-streams: cannot migrate postgresql://app:***@127.0.0.1:{closed}/db: ")
    assert "s3cret" not in line and "onnect" in line


@pytest.mark.postgres
def test_missing_postgres_database_is_one_line() -> None:
    server = require_postgres()
    from tests.integration.streams.pg_database import database_url

    name = f"iii_missing_{uuid.uuid4().hex[:8]}"
    url = database_url(server, name).replace("postgres@", "postgres:s3cret@", 1)
    line = one_error_line(streams_cli("current", url), 1)
    assert line.endswith(f'database "{name}" does not exist') and "s3cret" not in line and ":***@" in line


def test_missing_sql_extra_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\nfor name in ('sqlalchemy', 'alembic'):\n    sys.modules[name] = None  # as if not installed\n")
    database = tmp_path / "x.db"
    line = one_error_line(streams_cli("migrate", f"sqlite:///{database}", pythonpath=str(blocker)), 1)
    assert line.startswith("iii-streams: migrate needs the sql extra: missing package ")
    assert "(pip install 'iii-toolkit[sql]')" in line
    assert not database.exists()
