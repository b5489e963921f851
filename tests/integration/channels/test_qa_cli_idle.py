"""``iii-channel serve --out - --idle-timeout``, end to end: a real engine, serve and two senders as processes.

Before: a ``send -`` whose stdin went quiet held serve's stdout for good, and a second sender waited for ever. Then
the second was served after the quiet one's bytes, with nothing between them; now, since the quiet one had written
to stdout, serve stops with one line (status 1) and the second sender fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.integration.channels import test_cli

pytestmark = pytest.mark.timeout(30)
engine_url, serve = test_cli.engine_url, test_cli.serve  # the fixtures, shared


async def test_a_quiet_sender_that_wrote_to_stdout_fails_after_the_idle_timeout_and_serve_stops(
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
        quiet_done = await test_cli._finish(quiet)
        assert quiet_done.rc == 1 and quiet_done.stdout == b""
        assert "files::cat failed" in quiet_done.stderr
        assert "nothing from the writer for 1 s (after 100 bytes)" in quiet_done.stderr
        # Refused while it waited for stdout, or not found once serve stopped: never stored after the q's.
        done = await test_cli._finish(next_sender)
        assert done.rc == 1 and done.stdout == b"", done.stderr
        assert "files::cat failed" in done.stderr
        served = await test_cli._finish(server)
        assert served.rc == 1, served.stderr
        assert served.stdout == b""  # after the 100 q's read above
        last = served.stderr.strip().splitlines()[-1]
        assert last.startswith("iii-channel: error: the transfer of 'stdin' failed after 100 of its bytes were "
                               "written to stdout ("), last
        assert last.endswith("); serve stops, so that no later transfer follows them there"), last
    finally:
        for proc in (quiet, next_sender):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
