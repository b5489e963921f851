"""``iii-channel send`` through an engine that names the connection (``workerregistered``) 1.5 s after the upgrade,
with ``--connect-timeout 0.5``: the timeout bounds reaching the engine, and a connection upgraded in time gets the
SDK's own 5 s to be named, so the transfer is made and verified.

Before: status 1 in ~3 s, "… is not an iii engine: it did not name the connection (no workerregistered) within 0.5
s" (the naming got at least 1 s after the upgrade, and the line stated 0.5 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.integration.channels.test_cli import _finish, _start
from tests.integration.channels.test_cli_peer_text_escaped import _serving

pytestmark = pytest.mark.timeout(30)

HELD_S = 1.5


class _SlowNamingProxy:
    """A TCP proxy to the engine that passes the engine's 101 response through at once, then holds whatever the
    engine says next (its ``workerregistered`` first) for :data:`HELD_S` seconds: an engine slow to name."""

    def __init__(self, engine_url: str) -> None:
        parts = urlsplit(engine_url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.held: list[float] = []  # how long each connection's frames were held
        self._tasks: set[asyncio.Task[None]] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hold: bool) -> None:
        pending = b""
        try:
            while data := await reader.read(65536):
                if not hold:
                    writer.write(data)
                    await writer.drain()
                    continue
                pending += data
                end = pending.find(b"\r\n\r\n")
                if end < 0:
                    continue
                writer.write(pending[:end + 4])
                await writer.drain()
                began = time.monotonic()
                await asyncio.sleep(HELD_S)  # the slowness under test, not a synchronisation
                self.held.append(time.monotonic() - began)
                writer.write(pending[end + 4:])
                await writer.drain()
                hold = False
        except OSError:
            pass
        finally:
            writer.close()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        engine_reader, engine_writer = await asyncio.open_connection(*self._target)
        await asyncio.gather(self._pipe(client_reader, engine_writer, False),
                             self._pipe(engine_reader, client_writer, True))

    def _track(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._handle(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        """Serve on a free port; yields its ``ws://`` URL."""
        server = await asyncio.start_server(self._track, "127.0.0.1", 0)
        try:
            yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def test_send_through_an_engine_slow_to_name_the_connection(engine_url: str, tmp_path: Path) -> None:
    source = tmp_path / "one.bin"
    source.write_bytes(b"one" * 1000)
    server = await _serving(engine_url, "--function", "slow::name", "--out", str(tmp_path / "got.bin"),
                            "--no-progress")
    proxy = _SlowNamingProxy(engine_url)
    try:
        async with proxy.running() as slow_url:
            began = time.monotonic()
            sent = await _finish(await _start("send", str(source), "--to", "slow::name", "--engine", slow_url,
                                              "--connect-timeout", "0.5", "--no-progress"))
            took = time.monotonic() - began
        assert sent.rc == 0 and sent.stderr == "", (took, sent.stderr)
        served = await _finish(server)
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
    assert proxy.held, "the proxy held no frames"  # the naming did come late
    assert json.loads(sent.stdout)["result"]["verified"] is True
    assert served.rc == 0, served.stderr
    assert (tmp_path / "got.bin").read_bytes() == source.read_bytes()
