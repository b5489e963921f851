"""Every command (console script and ``python -m`` form): ``--version``, ``--help``, one-line errors with exit
status 2 for usage and 1 for failure, never a traceback for a user's mistake (issue #11)."""

from __future__ import annotations

import importlib.util
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from iii._version import __version__
from tests.packaging.helpers import COMMANDS, ROOT, command_line, run

FORMS = ("script", "module")


def assert_one_line_error(done: subprocess.CompletedProcess[str], prog: str, status: int) -> str:
    assert done.returncode == status, f"exit {done.returncode}, stderr: {done.stderr!r}"
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: "), f"not one '{prog}: …' line: {done.stderr!r}"
    return lines[0]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("prog", sorted(COMMANDS))
def test_version(prog: str, form: str, tmp_path: Path) -> None:
    done = run([*command_line(prog, form), "--version"], tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{prog} {__version__}\n", "")


@pytest.mark.parametrize("prog", sorted(COMMANDS))
def test_help(prog: str, tmp_path: Path) -> None:
    done = run([*command_line(prog, "module"), "--help"], tmp_path)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.startswith(f"usage: {prog}") and "--version" in done.stdout


@pytest.mark.parametrize("prog", sorted(COMMANDS))
def test_usage_error_is_one_line_with_status_2(prog: str, tmp_path: Path) -> None:
    args = ["send", "--no-such-flag"] if prog == "iii-channel" else ["--no-such-flag"]
    line = assert_one_line_error(run([*command_line(prog, "script"), *args], tmp_path), prog, 2)
    assert line.endswith(f"(see {prog} --help)")


def test_engine_failure_is_one_line_with_status_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run([*command_line("iii-engine", "script"), "--port", str(port)], tmp_path)
    line = assert_one_line_error(done, "iii-engine", 1)
    assert str(port) in line


def test_channel_failure_is_one_line_with_status_1(tmp_path: Path) -> None:
    done = run([*command_line("iii-channel", "script"), "send", str(tmp_path / "nope.bin"), "--to", "f::x"], tmp_path)
    assert "nope.bin" in assert_one_line_error(done, "iii-channel", 1)


def test_streams_failure_is_one_line_with_status_1(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'missing.db'}"
    done = run([*command_line("iii-streams", "script"), "current", url], tmp_path)
    assert "does not exist" in assert_one_line_error(done, "iii-streams", 1)


def test_inspect_failure_is_one_line_with_status_1(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    done = run([*command_line("iii-engine", "script"), "health", "--url", f"ws://127.0.0.1:{port}"], tmp_path)
    assert "reach" in assert_one_line_error(done, "iii-engine health", 1)


def _engine_log(log_format: str, tmp_path: Path) -> list[str]:
    """The stderr lines of an engine started with ``--log-format`` and stopped by SIGTERM once it is ready."""
    argv = [*command_line("iii-engine", "module"), "--port", "0", "--log-format", log_format]
    env = {"PYTHONPATH": str(ROOT), "PATH": str(Path(sys.executable).parent)}
    with subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        assert proc.stdout is not None
        ready = proc.stdout.readline()  # the engine prints this line once it accepts workers
        assert ready.startswith("iii engine listening on "), ready
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    return err.splitlines()


def test_engine_json_log_lines(tmp_path: Path) -> None:
    records = [json.loads(line) for line in _engine_log("json", tmp_path)]  # every line is one JSON object
    assert records
    assert all(set(r) >= {"time", "level", "logger", "message"} and r["time"].endswith("Z") for r in records)
    ours = {r["logger"] for r in records if r["logger"].startswith("iii_engine")}
    assert "iii_engine.engine" in ours, ours
    # logger names are module paths (or a named child of one, such as a module's websockets sub-logger)
    assert all(_module_of(name) for name in ours), ours


def _module_of(logger: str) -> str | None:
    """The longest dotted prefix of ``logger`` that is an importable module of ours."""
    parts = logger.split(".")
    for end in range(len(parts), 1, -1):
        name = ".".join(parts[:end])
        try:
            if importlib.util.find_spec(name) is not None:
                return name
        except (ImportError, AttributeError):  # a prefix below a plain module
            continue
    return None


def test_engine_text_log_lines(tmp_path: Path) -> None:
    lines = _engine_log("text", tmp_path)
    assert any(" INFO iii_engine.engine: " in line for line in lines), lines
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[0])


def test_bad_log_format_is_a_usage_error(tmp_path: Path) -> None:
    done = run([*command_line("iii-engine", "script"), "--log-format", "xml"], tmp_path)
    assert "--log-format" in assert_one_line_error(done, "iii-engine", 2)
