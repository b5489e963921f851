"""``iii-streams`` says what to do next: without a command it names the commands (it said "required: command"),
and ``current`` on a database never migrated keeps ``none`` on stdout (scripts read it) and exit 0, with a hint on
stderr to migrate it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.integration.streams.test_streams_cli_trust import one_error_line, streams_cli

pytestmark = pytest.mark.timeout(30)


def test_no_command_names_the_commands() -> None:
    line = one_error_line(streams_cli(), 2)
    assert line == ("iii-streams: the following arguments are required: a command (migrate or current) "
                    "(see iii-streams --help)")


def test_current_of_a_database_never_migrated_says_to_migrate_it(tmp_path: Path) -> None:
    database = tmp_path / "streams.db"
    sqlite3.connect(database).close()  # an existing, empty database
    url = f"sqlite+aiosqlite:///{database}"
    never = streams_cli("current", url)
    assert (never.returncode, never.stdout) == (0, "none\n")
    assert never.stderr == (f"iii-streams: current: no stream schema in {url}: run iii-streams migrate URL to "
                            "create it\n")
    assert streams_cli("migrate", url).returncode == 0
    migrated = streams_cli("current", url)
    assert (migrated.returncode, migrated.stdout, migrated.stderr) == (0, "0001_stream_items\n", "")
