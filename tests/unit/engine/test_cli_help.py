"""``iii-engine --help`` names the subcommands that read a running engine (they are dispatched before its parser)."""

from __future__ import annotations

import pytest

from iii_engine.cli import main
from iii_engine.inspect_cli import COMMANDS


def test_help_lists_the_inspection_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ") and line.split()]
    # before: --help described only the engine's own flags (no line for logs, traces, metrics or health)
    assert [name for name in COMMANDS if name in listed] == list(COMMANDS)
