"""``iii-channel send`` to an engine that refuses the connection says at once that it waits (and how long), where
progress is shown; a script's stderr (no terminal, no ``--progress always``) keeps its one error line."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from tests.integration.channels.test_cli import _finish, _start


async def _send(path: Path, port: int, connect_s: str, *extra: str) -> tuple[float, str, int, str]:
    began = time.monotonic()
    sender = await _start("send", str(path), "--to", "files::x", "--engine", f"ws://127.0.0.1:{port}",
                          "--connect-timeout", connect_s, *extra)
    assert sender.stderr is not None
    first = (await asyncio.wait_for(sender.stderr.readline(), 10)).decode()
    first_after = time.monotonic() - began
    done = await _finish(sender, first=first)
    return first_after, first, done.rc, done.stderr


async def test_a_refused_engine_is_said_at_once_with_progress(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"a")
    with socket.socket() as bound:  # bound, not listening: every attempt is refused, and the port stays ours
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        first_after, first, rc, stderr = await _send(path, port, "6", "--progress", "always")
        quiet = await _send(path, port, "1")
    # before: nothing for the whole --connect-timeout, then only the error
    assert first.startswith(f"iii-channel: waiting up to 6 s for the engine at ws://127.0.0.1:{port} ("), stderr
    assert first_after < 4.5, first_after  # said on the first refusal (the process start included), not after 6 s
    assert rc == 1
    lines = stderr.splitlines()
    assert len(lines) == 2 and lines[1].startswith(f"iii-channel: error: cannot reach the engine at "
                                                   f"ws://127.0.0.1:{port} within 6 s"), stderr
    _, _, quiet_rc, quiet_stderr = quiet
    assert quiet_rc == 1
    assert len(quiet_stderr.splitlines()) == 1 and "cannot reach the engine" in quiet_stderr, quiet_stderr


async def test_a_server_that_is_not_an_engine_is_not_waited_for(tmp_path: Path) -> None:
    """An HTTP server that answers the upgrade with a page: the send fails at once, with no "waiting" line first
    (before: "waiting up to 10 s …" printed as the CLI gave up, the error line right after it)."""
    path = tmp_path / "a.bin"
    path.write_bytes(b"a")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        _, first, rc, stderr = await _send(path, port, "10", "--progress", "always")
    assert rc == 1
    assert "waiting" not in first and "did not answer as an iii engine" in first, (first, stderr)
