"""Ctrl-C on ``iii-channel send`` in the middle of a transfer: one line, no traceback on stderr, and the process ends
by SIGINT (status 130 in a shell), as Python ends on an uncaught Ctrl-C, so that a shell loop running it stops.

The README promises every ``iii-channel`` failure as one line, "never a traceback". Interrupted mid-transfer, the
send's call to the serving function is failed by the client's shutdown and nobody reads that task's error, so the
interpreter prints ``Task exception was never retrieved`` with the ``ShuttingDownError`` traceback on the way out.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.conftest import EngineProcess
from tests.integration.channels.test_cli import SERVING, _finish, _start
from tests.polling import until


async def test_interrupted_send_ends_by_sigint_without_a_traceback(
        engine_process: Callable[..., Awaitable[EngineProcess]], tmp_path: Path) -> None:
    url = (await engine_process()).url
    server = await _start("serve", "--function", "files::sigint", "--out", str(tmp_path), "--engine", url)
    sender: asyncio.subprocess.Process | None = None
    try:
        assert server.stderr is not None
        while SERVING not in (await asyncio.wait_for(server.stderr.readline(), 15)).decode():
            pass
        sender = await _start("send", "-", "--to", "files::sigint", "--name", "part.bin", "--engine", url,
                              stdin=asyncio.subprocess.PIPE)
        assert sender.stdin is not None
        sender.stdin.write(b"x" * 1_000_000)  # stdin stays open: the transfer is under way when interrupted
        await sender.stdin.drain()
        # The partial file on the serving side shows the transfer has started.
        await until(lambda: any(tmp_path.glob(".iii-part-*")), within=15)
        sender.send_signal(signal.SIGINT)
        done = await _finish(sender)
        assert done.rc == -signal.SIGINT, done.stderr  # before: exit status 130, and a shell loop went on
        assert "Traceback" not in done.stderr and "never retrieved" not in done.stderr, done.stderr
        assert done.stderr == "iii-channel: send: interrupted\n", done.stderr
    finally:
        for proc in (sender, server):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
