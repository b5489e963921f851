"""``iii-channel serve --out - --idle-timeout``, end to end: a real engine, serve and two senders as processes.

Before: a ``send -`` whose stdin went quiet held serve's stdout for good, and a second sender waited for ever.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.integration.channels import test_cli

pytestmark = pytest.mark.timeout(30)
engine_url, serve = test_cli.engine_url, test_cli.serve  # the fixtures, shared


async def test_a_quiet_sender_loses_stdout_after_the_idle_timeout_and_hears_why(
    serve: Callable[..., Awaitable[tuple[asyncio.subprocess.Process, str]]], engine_url: str, tmp_path: Path,
) -> None:
    server, _ = await serve("--function", "files::cat", "--out", "-", "--idle-timeout", "1")
    assert server.stdout is not None
    quiet = await test_cli._start("send", "-", "--to", "files::cat", "--engine", engine_url,
                                  stdin=asyncio.subprocess.PIPE)
    assert quiet.stdin is not None
    quiet.stdin.write(b"q" * 100)
    await quiet.stdin.drain()
    # Its bytes reached stdout: the quiet sender has the lock; then it sends nothing more, stdin left open.
    assert await asyncio.wait_for(server.stdout.readexactly(100), 15) == b"q" * 100
    src = tmp_path / "next.bin"
    src.write_bytes(b"n" * 1000)
    next_sender = await test_cli._start("send", str(src), "--to", "files::cat", "--engine", engine_url)
    try:
        done = await test_cli._finish(next_sender)
        assert done.rc == 0, done.stderr
        assert json.loads(done.stdout)["result"]["verified"] is True
        assert await asyncio.wait_for(server.stdout.readexactly(1000), 5) == b"n" * 1000
        quiet_done = await test_cli._finish(quiet)
        assert quiet_done.rc == 1 and quiet_done.stdout == b""
        assert "files::cat failed" in quiet_done.stderr
        assert "nothing from the writer for 1 s (after 100 bytes)" in quiet_done.stderr
    finally:
        if quiet.returncode is None:
            quiet.kill()
            await quiet.wait()
