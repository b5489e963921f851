"""``iii-engine``'s ``main()`` refusing a configuration leaves the process's log levels as it found them: since the
start-up log is set up before the file is read, a refused file left the root logger at INFO, and in a process that
runs on (a test's) every engine logger then emitted INFO records (a later test caught "worker … connected" among
its warnings)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from iii_engine import cli


def test_a_refused_configuration_leaves_the_log_levels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "iii.yaml"
    config.write_text("modules:\n  - clas: modules::state::StateModule\n")
    root, alembic = logging.getLogger(), logging.getLogger("alembic")
    before = (root.level, alembic.level, list(root.handlers))
    assert cli.main(["--config", str(config), "--port", "0"]) == 2
    assert "did you mean 'class'?" in capsys.readouterr().err
    assert (root.level, alembic.level, list(root.handlers)) == before
