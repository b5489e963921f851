"""Helpers of the packaging tests: run a command of the toolkit in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# console script -> the package whose ``python -m`` form does the same
COMMANDS = {"iii-engine": "iii_engine", "iii-channel": "iii_channels", "iii-streams": "iii_streams"}
RUN_TIMEOUT_S = 25.0


def command_line(name: str, form: str) -> list[str]:
    """``name`` as its console script next to this interpreter (``script``) or as ``python -m`` (``module``)."""
    if form == "script":
        return [str(Path(sys.executable).parent / name)]
    return [sys.executable, "-m", COMMANDS[name]]


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with the checkout importable, stdin closed, output captured."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(argv, cwd=cwd, env=full_env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=RUN_TIMEOUT_S, check=False)
