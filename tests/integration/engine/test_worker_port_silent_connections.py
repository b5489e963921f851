"""The engine's port holds at most ``max_handshakes`` connections that have not sent their whole upgrade request.

Before: each held a descriptor until websockets' 10 s open_timeout, however many came. A flood of them took every
descriptor the engine had: ``accept()`` failed with EMFILE ("out of system resource"), so no worker could connect
(and no store or file could be opened) until they timed out, again with each new round. Now the connection silent
longest gives its place to the newcomer, a connection whose request waits unread never does, and connections whose
request came (workers, channel ends) are not counted at all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket
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

PROMPT_S = 3.0  # far below websockets' 10 s open_timeout

_UPGRADE = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def _silent(port: int, n: int) -> list[socket.socket]:
    """``n`` TCP connections that never send anything (blocking connects: the kernel completes each handshake
    whether or not the engine's loop runs meanwhile)."""
    return [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(n)]


def _close(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


async def _registered(url: str) -> None:
    async with asyncio.timeout(PROMPT_S):
        async with websockets.connect(url) as ws:
            assert json.loads(await ws.recv())["type"] == "workerregistered"


async def test_a_worker_connects_past_a_flood_of_silent_connections_at_a_low_file_limit(
        engine_process: Callable[..., Awaitable[Any]], tmp_path: Path) -> None:
    config = tmp_path / "engine.yaml"
    config.write_text("max_handshakes: 64\n")
    engine = await engine_process("--config", str(config))
    # the engine's share of descriptors as on a host with a low open-file limit (1,024 is common)
    resource.prlimit(engine.process.pid, resource.RLIMIT_NOFILE, (256, 256))
    flood = _silent(engine.port, 300)
    try:
        # before: the worker waited in the listen queue (accept failed with EMFILE) until the silent ones timed out
        await _registered(engine.url)
        await _registered(engine.url)  # and again: the places freed are not taken for good
    finally:
        _close(flood)
    assert "out of system resource" not in engine.log()
    assert "that sent none, oldest first, for newer ones" in engine.log()


async def test_a_flood_is_one_warning_and_no_line_per_connection(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "iii_engine.server")
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, max_handshakes=4)) as engine:
        listener = engine._listener
        flood = _silent(listener.port, 40)
        try:
            await until(lambda: listener.evicted_connections == 36, within=5)
            await _registered(engine.url)  # a worker's request is read at once: it takes a place, then leaves it
        finally:
            _close(flood)
        await until(lambda: len(listener._silent) == 0, within=5)
    records = [r for r in caplog.records if r.name.startswith("iii_engine.server")]
    warnings = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings  # the first at once, the rest counted at the stop
    assert "max_handshakes 4:" in warnings[0] and "37 and 0 in all" in warnings[1], warnings
    closed = [r for r in records if r.getMessage() == "connection closed"]
    # the 4 that kept their place (and the worker's, when websockets logs it); not the 36 evicted (before: 40 or 41)
    assert len(closed) in (4, 5), len(closed)


async def test_a_request_waiting_unread_in_an_accept_batch_keeps_its_place() -> None:
    # asyncio accepts up to 100 connections in one loop turn before it reads any: the oldest of such a batch has its
    # whole request in the kernel and must not be taken for silent. With the one place held by it, the silent ones
    # are closed as accepted.
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, max_handshakes=1)) as engine:
        listener = engine._listener
        client = socket.create_connection(("127.0.0.1", listener.port), timeout=5)
        client.sendall(_UPGRADE)
        flood = _silent(listener.port, 3)
        try:
            answer = await asyncio.wait_for(asyncio.to_thread(client.recv, 200), PROMPT_S)
            assert answer.startswith(b"HTTP/1.1 101"), answer
            assert (listener.evicted_connections, listener.refused_connections) == (0, 3)
        finally:
            client.close()
            _close(flood)


def test_max_handshakes_is_checked_at_start() -> None:
    with pytest.raises(ConfigError, match=r"^max_handshakes: must be >= 1, got 0$"):
        parse_config("max_handshakes: 0", env={})
    assert parse_config("max_handshakes: 8", env={}).max_handshakes == 8
