"""``iii_channels.cli.main`` escapes the SDK's last-resort log lines only while it runs: a program that calls it
in-process keeps its own last-resort format afterwards.

Before: ``main()`` set ``logging.lastResort``'s formatter to ``_PrintableLog`` for good, so the embedding program's
later last-resort lines were escaped and flattened (a traceback's lines kept, a message's newline shown as ``\\n``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest

from iii_channels import cli


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("iii.test", logging.WARNING, __file__, 1, "aborted: %s", (message,), None)


@pytest.fixture
def last_resort(monkeypatch: pytest.MonkeyPatch) -> tuple[logging.Handler, logging.Formatter]:
    """Python's last-resort handler, given a formatter of the embedding program's own (put back after the test)."""
    handler = logging.lastResort
    assert handler is not None
    mine = logging.Formatter("mine: %(message)s")
    monkeypatch.setattr(handler, "formatter", mine)
    return handler, mine


def test_main_escapes_while_it_runs_and_then_puts_the_format_back(
    last_resort: tuple[logging.Handler, logging.Formatter], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    handler, mine = last_resort
    during: list[str] = []

    async def send(args: argparse.Namespace) -> int:  # in place of the transfer: a log line of the SDK
        during.append(handler.format(_record("\x1b[2J\u202eok")))
        return 0

    monkeypatch.setattr(cli, "_send", send)
    source = tmp_path / "a.bin"
    source.write_bytes(b"a")
    assert cli.main(["send", str(source), "--to", "f::x", "--engine", "ws://127.0.0.1:9"]) == 0
    assert during == ["aborted: \\x1b[2J\\u202eok"]
    assert handler.formatter is mine
    assert handler.format(_record("line 1\nline 2")) == "mine: aborted: line 1\nline 2"


def test_a_usage_error_puts_the_format_back_too(last_resort: tuple[logging.Handler, logging.Formatter]) -> None:
    handler, mine = last_resort
    with pytest.raises(SystemExit) as exited:
        cli.main(["send", "x.bin", "--to", "  ", "--engine", "ws://127.0.0.1:9"])
    assert exited.value.code == 2
    assert handler.formatter is mine


def test_overlapping_calls_put_it_back_once_the_last_ends(
    last_resort: tuple[logging.Handler, logging.Formatter],
) -> None:
    """Two ``main()`` calls under way at once (threads of one program): the first to end leaves the other's escaping
    in place, the last puts the program's own format back."""
    handler, mine = last_resort
    first, second = cli._printable_last_resort(), cli._printable_last_resort()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert isinstance(handler.formatter, cli._PrintableLog)
    second.__exit__(None, None, None)
    assert handler.formatter is mine
