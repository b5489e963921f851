"""An optional part used without its extra fails with one clear line naming the extra to install (issue #11).

Each case runs in a fresh interpreter whose ``sitecustomize`` makes the named packages unimportable, as if the
extra that brings them had never been installed.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.packaging.helpers import ROOT, command_line, run

# every package an extra brings that the toolkit imports itself
OPTIONAL = ("aiohttp", "multidict", "yarl", "redis", "sqlalchemy", "alembic", "aiosqlite", "asyncpg",
            "opentelemetry", "pytest", "pytest_asyncio")

_BLOCKER = textwrap.dedent('''
    import os, sys

    BLOCKED = set(os.environ["III_TEST_BLOCK"].split(","))

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
''')


def run_without(blocked: tuple[str, ...], argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_BLOCKER, encoding="utf-8")
    return run(argv, tmp_path, env={"PYTHONPATH": f"{site}:{ROOT}", "III_TEST_BLOCK": ",".join(blocked)})


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def test_blocker_works(tmp_path: Path) -> None:
    done = run_without(("redis",), python("import redis"), tmp_path)
    assert done.returncode == 1 and "No module named 'redis'" in done.stderr


def test_every_package_imports_with_no_extra(tmp_path: Path) -> None:
    code = "import iii, iii_engine, iii_streams, iii_channels, iii_engine.cli, iii_streams.cli, iii_channels.cli"
    done = run_without(OPTIONAL, python(code), tmp_path)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("prog", ["iii-engine", "iii-channel", "iii-streams"])
def test_every_command_answers_version_with_no_extra(prog: str, tmp_path: Path) -> None:
    done = run_without(OPTIONAL, [*command_line(prog, "module"), "--version"], tmp_path)
    assert done.returncode == 0 and done.stdout.startswith(prog), done.stderr


@pytest.mark.parametrize(("blocked", "args", "extra"), [
    (("aiohttp",), ["--port", "0"], "http"),  # the REST API module of the default set
    (("redis",), ["--port", "0", "--stream-store", "redis://127.0.0.1:1/0"], "redis"),
    (("sqlalchemy",), ["--port", "0", "--stream-store", "sqlite+aiosqlite://"], "sql"),
])
def test_engine_names_the_missing_extra(blocked: tuple[str, ...], args: list[str], extra: str,
                                        tmp_path: Path) -> None:
    done = run_without(blocked, [*command_line("iii-engine", "module"), *args], tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and f"pip install 'iii-toolkit[{extra}]'" in done.stderr, done.stderr


def test_streams_command_names_the_missing_extra(tmp_path: Path) -> None:
    done = run_without(("sqlalchemy",), [*command_line("iii-streams", "module"), "migrate", "sqlite://"], tmp_path)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "pip install 'iii-toolkit[sql]'" in done.stderr


@pytest.mark.parametrize(("blocked", "code", "extra"), [
    (("redis",), "import iii_streams; iii_streams.open_stream('redis://127.0.0.1:6379/0')", "redis"),
    (("redis",), "import iii_streams; iii_streams.RedisStream", "redis"),
    (("sqlalchemy",), "import iii_streams; iii_streams.SQLStream", "sql"),
    (("aiosqlite",), "import iii_streams; iii_streams.open_stream('sqlite:///x.db')", "sql"),
    (("asyncpg",), "import iii_streams; iii_streams.open_stream('postgresql://u@h/db')", "postgres"),
    (("pytest_asyncio",), "import iii_streams.testing", "testing"),
])
def test_library_names_the_missing_extra(blocked: tuple[str, ...], code: str, extra: str, tmp_path: Path) -> None:
    wrapped = f"""
        try:
            {code}
        except ModuleNotFoundError as exc:
            print(f"{{exc.name}}|{{exc}}")
        """
    done = run_without(blocked, python(wrapped), tmp_path)
    assert done.returncode == 0, done.stderr
    name, _, message = done.stdout.strip().partition("|")
    assert name.partition(".")[0] == blocked[0]  # still a ModuleNotFoundError for the same module
    assert message.endswith(f"pip install 'iii-toolkit[{extra}]'"), message
