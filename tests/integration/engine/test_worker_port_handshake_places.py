"""The engine's port holds at most ``max_handshakes`` connections that have not sent their whole upgrade request:
with that many it stops accepting (new ones wait in the kernel's listen queue) until one sends its request or
closes. Nothing is closed for it: a burst of connects from one busy process only waits.

Before: each silent connection held a descriptor until websockets' 10 s handshake timeout, however many came; a flood
of them took every descriptor the engine had (``accept()`` failed with EMFILE, "out of system resource").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import resource
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import websockets

from iii_engine import Engine, EngineConfig
from iii_engine.config import parse_config
from iii_engine.settings import ConfigError
from tests.polling import until

pytestmark = [pytest.mark.timeout(30),
              pytest.mark.our_engine("bounds the connections in their opening handshake with max_handshakes")]

_UPGRADE = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")

Flood = list[asyncio.StreamWriter]


async def _silent(port: int, n: int, within: float = 2.0) -> tuple[Flood, list[asyncio.Task[Any]]]:
    """Up to ``n`` TCP connections that never send anything: those the kernel completed within ``within`` seconds,
    and the tasks of the others (still retrying their SYN against a full listen queue; cancel them)."""
    writers: Flood = []

    async def one() -> None:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)

    tasks = [asyncio.ensure_future(one()) for _ in range(n)]
    await asyncio.wait(tasks, timeout=within)
    return writers, [t for t in tasks if not t.done()]


async def _drop(flood: Flood, pending: list[asyncio.Task[Any]]) -> None:
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for writer in flood:
        writer.transport.abort()


async def _registered(url: str, within: float) -> None:
    async with asyncio.timeout(within):
        async with websockets.connect(url, open_timeout=None) as ws:
            assert json.loads(await ws.recv())["type"] == "workerregistered"


def _open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def test_a_flood_of_silent_connections_cannot_take_the_engines_descriptors(
        engine_process: Callable[..., Awaitable[Any]], tmp_path: Path) -> None:
    config = tmp_path / "engine.yaml"
    config.write_text("max_handshakes: 64\n")
    engine = await engine_process("--config", str(config))
    pid = engine.process.pid
    # the engine's descriptors as on a host with a low open-file limit (1,024 is common)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (256, 256))
    before = _open_files(pid)
    flood, pending = await _silent(engine.port, 300)
    try:
        # the port stopped accepting: the silent ones hold 64 places and at most one accept batch (100) more
        await until(lambda: "stopped accepting" in engine.log(), within=10)
        held = _open_files(pid) - before
        assert held <= 64 + 100, held
        assert len(flood) >= 64, len(flood)
        assert "out of system resource" not in engine.log()  # before: accept() failed with EMFILE
    finally:
        await _drop(flood, pending)
    # closed by their clients, their places are free again at once (not after the 10 s handshake timeout)
    await _registered(engine.url, within=5)
    assert "out of system resource" not in engine.log()


async def test_a_paused_port_takes_a_worker_as_soon_as_a_place_is_free(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "iii_engine.server")
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, max_handshakes=4)) as engine:
        listener = engine._listener
        flood, pending = await _silent(listener.port, 12, within=1.0)
        try:
            await until(lambda: listener.accept_pauses >= 1, within=5)
            assert len(listener._handshaking) <= 4 + 100  # its places and one accept batch
            worker = asyncio.ensure_future(_registered(engine.url, within=20))
            await asyncio.sleep(0.3)  # a moment in which a port that still accepted would have registered it
            assert not worker.done(), "the worker got in while every place was held"
        finally:
            await _drop(flood, pending)
        await asyncio.wait_for(worker, 5)  # the places freed: the worker waiting in the listen queue gets in
        assert not listener._gate.paused  # type: ignore[union-attr]
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "iii_engine.server" and r.levelno >= logging.WARNING]
    assert warnings and "max_handshakes (4)" in warnings[0], warnings
    assert all("stopped accepting" in w for w in warnings), warnings


async def test_a_connection_let_in_by_asyncios_accept_retry_pauses_the_port_again() -> None:
    """asyncio adds its accept handler back a second after an accept failed with EMFILE, paused or not; the next
    connection in pauses the port again (before, the listener took the gate for paused and let every one in)."""
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, max_handshakes=2)) as engine:
        listener = engine._listener
        flood, pending = await _silent(listener.port, 2, within=2.0)
        try:
            await until(lambda: listener.accept_pauses == 1, within=5)
            server: Any = listener._server.server  # type: ignore[union-attr]
            server._serving = False  # what asyncio's retry of a failed accept does: its accept handler is back
            server._start_serving()
            late, late_pending = await _silent(listener.port, 1, within=2.0)
            flood += late
            pending += late_pending
            await until(lambda: len(listener._handshaking) == 3, within=5)
            more, more_pending = await _silent(listener.port, 3, within=0.5)
            flood += more
            pending += more_pending
            await asyncio.sleep(0.3)  # a moment in which an accepting port takes them in (nothing to await)
            assert len(listener._handshaking) == 3, "let in while the gate said paused"
        finally:
            await _drop(flood, pending)
        await until(lambda: not listener._handshaking, within=5)


async def test_a_burst_of_connects_from_one_busy_process_loses_none() -> None:
    """A busy process connects many sockets before it writes any request: past max_handshakes they wait in the
    listen queue, none is closed (a bound that closed the oldest silent one lost half of such a burst)."""
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, max_handshakes=8)) as engine:
        listener = engine._listener
        rng = random.Random(7)

        async def client() -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
            try:
                await asyncio.sleep(rng.uniform(0, 0.5))  # busy elsewhere before it writes its request
                writer.write(_UPGRADE)
                return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
            finally:
                writer.transport.abort()

        answers = await asyncio.gather(*(client() for _ in range(60)))
        assert all(a.startswith(b"HTTP/1.1 101") for a in answers), [a[:40] for a in answers if b" 101 " not in a]
        assert listener.accept_pauses >= 1, "the burst never filled the places: the test proves nothing"
        await until(lambda: not listener._handshaking, within=5)


async def test_the_stop_of_a_paused_port_is_prompt() -> None:
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, max_handshakes=2))
    await engine.start()
    listener = engine._listener
    flood, pending = await _silent(listener.port, 10, within=1.0)
    try:
        await until(lambda: listener.accept_pauses >= 1, within=5)
        async with asyncio.timeout(5):  # the paused listening socket is closed like a serving one
            await engine.stop()
    finally:
        await _drop(flood, pending)
        with contextlib.suppress(Exception):
            await engine.stop()


async def test_max_handshakes_near_the_open_file_limit_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert limit != resource.RLIM_INFINITY
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, max_handshakes=limit)):
        pass
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w for w in warnings if w.startswith(f"max_handshakes {limit} leaves little of the open-file limit")], \
        warnings
    caplog.clear()
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0)):  # the default: no warning
        pass
    assert not [r for r in caplog.records if "max_handshakes" in r.getMessage()], caplog.records


def test_max_handshakes_is_checked_at_start() -> None:
    with pytest.raises(ConfigError, match=r"^max_handshakes: must be >= 1, got 0$"):
        parse_config("max_handshakes: 0", env={})
    assert parse_config("max_handshakes: 8", env={}).max_handshakes == 8
