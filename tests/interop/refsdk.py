"""Where the reference SDK lives for interop tests, and how to run a script under it or under ours."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.services import reference_python

__all__ = ["Script", "our_python", "reference_python", "run_scenario", "sdk_env"]

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = Path(__file__).with_name("scenario.py")


def sdk_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["OTEL_ENABLED"] = "false"  # telemetry is not part of the frames we compare
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Script:
    """A scenario process; read its JSON step lines with :meth:`step`."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def step(self, wait_s: float = 15.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), wait_s)
            if not line:
                err = b""
                if self.proc.stderr is not None:
                    err = await self.proc.stderr.read()
                raise AssertionError(f"scenario ended early: {err.decode(errors='replace')[-2000:]}")
            if line.startswith(b"{"):
                step: dict[str, Any] = json.loads(line)
                return step

    async def finish(self, wait_s: float = 15.0) -> int:
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        return await asyncio.wait_for(self.proc.wait(), wait_s)


@asynccontextmanager
async def run_scenario(python: str, *args: str) -> AsyncIterator[Script]:
    proc = await asyncio.create_subprocess_exec(
        python, str(SCENARIO), *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=sdk_env(), cwd=str(SCENARIO.parent),
    )
    try:
        yield Script(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def our_python() -> str:
    return sys.executable
