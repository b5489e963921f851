"""The stream module's stop ends the connections still in their opening handshake within ``CLOSE_TIMEOUT_S``.

Before, the stop closed served clients and open connections only; websockets' own close answers 503 only to a
handshake whose request came, then waits for every connection's handler. A connection that never sent its upgrade
request (one is enough) held the engine's stop until websockets' 10 s open_timeout, and so did an upgrade whose
auth call never answered (that one is now answered 503 at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from iii_engine import Engine
from iii_engine.closing import CLOSE_TIMEOUT_S
from tests.polling import until

from .helpers import SocketClient, Worker, engine_config, registered, stream_module

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("stops its own stream socket")]

MAX_CLIENTS = 8
# far below websockets' 10 s open_timeout, a second above the close bound
STOP_BOUND_S = CLOSE_TIMEOUT_S + 1

Silent = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _silent(port: int, n: int, sent: bytes = b"") -> list[Silent]:
    """``n`` TCP connections that send ``sent`` (no complete upgrade request) and nothing more."""
    silent = []
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(sent)
        silent.append((reader, writer))
    return silent


async def _ended(reader: asyncio.StreamReader) -> bool:
    """Whether the engine ended this connection (an end or a reset; its stop is over, so no waiting)."""
    try:
        return await asyncio.wait_for(reader.read(1), 1) == b""
    except ConnectionResetError:
        return True


def _close(silent: list[Silent]) -> None:
    for _, writer in silent:
        writer.close()


@contextlib.asynccontextmanager
async def _engine_stopped_in_time(silent: list[Silent], **settings: Any) -> AsyncIterator[Engine]:
    """An engine whose stop (when the block ends without an error) must end within ``STOP_BOUND_S``; the
    ``silent`` connections (filled in by the block) are closed after it."""
    engine = Engine(config=engine_config(**settings))
    await engine.__aenter__()
    try:
        yield engine
    finally:
        started = time.monotonic()
        await engine.__aexit__(None, None, None)
        took = time.monotonic() - started
        _close(silent)
    assert took < STOP_BOUND_S, f"the engine's stop took {took:.1f} s"


async def test_the_stop_does_not_wait_for_connections_that_never_send_their_request() -> None:
    silent: list[Silent] = []
    async with _engine_stopped_in_time(silent, max_clients=MAX_CLIENTS) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        # places under max_clients, with nothing sent or half a request line
        silent += await _silent(socket.port, MAX_CLIENTS - 2)
        silent += await _silent(socket.port, 2, b"GET / HTTP/1.1\r\nHost: x\r\n")
        await until(lambda: socket._accepted == MAX_CLIENTS)
    assert [await _ended(reader) for reader, _ in silent] == [True] * len(silent)


async def test_the_stop_does_not_wait_for_connections_kept_to_be_answered_503() -> None:
    silent: list[Silent] = []
    async with _engine_stopped_in_time(silent, max_clients=MAX_CLIENTS) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        # every place under max_clients served: the silent ones hold the places kept to answer 503
        clients = [await SocketClient.connect(engine) for _ in range(MAX_CLIENTS)]
        silent += await _silent(socket.port, 2)
        silent += await _silent(socket.port, 2, b"GET / HTTP/1.1\r\nHost: x\r\n")
        await until(lambda: socket._accepted + socket._refusing == MAX_CLIENTS + 4)
    for client in clients:
        await asyncio.wait_for(client.ws.wait_closed(), 5)
    assert [client.ws.close_code for client in clients] == [1001] * MAX_CLIENTS
    assert [await _ended(reader) for reader, _ in silent] == [True] * len(silent)


async def test_a_joined_client_still_gets_its_close_when_silent_connections_are_stopped() -> None:
    silent: list[Silent] = []
    async with _engine_stopped_in_time(silent, max_clients=MAX_CLIENTS) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        client = await SocketClient.connect(engine)
        await client.join("a", "s", "g")
        assert (await client.recv())["event"]["type"] == "sync"
        silent += await _silent(socket.port, 3)
        await until(lambda: socket._accepted == 4)
    with pytest.raises(ConnectionClosed):
        await client.recv()
    assert (client.ws.close_code, client.ws.close_reason) == (1001, "")


async def test_the_stop_does_not_wait_for_an_auth_call_that_never_answers() -> None:
    calls = 0
    async with _engine_stopped_in_time([], auth_function="auth") as engine:
        worker = await Worker.connect(engine.url)

        async def auth(_: Any) -> Any:
            nonlocal calls
            calls += 1
            await asyncio.Event().wait()  # never answers (cancelled when the worker goes)

        await worker.register("auth", auth)
        await registered(engine, "auth")
        upgrade = asyncio.ensure_future(SocketClient.connect(engine))
        await until(lambda: calls == 1)
    with pytest.raises(InvalidStatus) as refused:  # its auth call given up: answered at once, never let in
        await asyncio.wait_for(upgrade, 5)
    assert (refused.value.response.status_code, refused.value.response.body) == (
        503, b"the stream socket is stopping\n")
    await worker.close()
