"""A bad flag value is a usage error of one line (exit 2), like a bad configuration file."""

from __future__ import annotations

import pytest

from iii_engine.cli import main


def test_an_empty_host_flag_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    # before: the ConfigError from the override escaped main as a traceback (exit 1)
    assert main(["--host", "", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err == "iii-engine: host: must not be empty, got ''\n"
