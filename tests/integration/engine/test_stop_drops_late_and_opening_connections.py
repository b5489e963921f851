"""The engine's stop with connections the worker port took in while the stop was closing it, or whose opening
handshake never ends.

The listener closed the connections it knew of first and the port only after that (2 s for a silent peer), so an
upgrade arriving in between was accepted and then waited for by websockets' own close (its close_timeout, 10 s);
a peer that sent half an upgrade request and stalled was waited for until websockets' open_timeout (10 s). Either
held ``Engine.stop()`` 6 s (its cut-off) and left the connection's handler running on the loop after it returned.
Now the port stops accepting first and every connection, opening handshakes included, is closed within 2 s, then
reset.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import AsyncIterator

import pytest

from iii_engine import Engine, EngineConfig, closing
from iii_engine import server as engine_server
from tests.integration.engine.raw import RawWorker

STOP_BOUND_S = 3.0  # a silent peer's close is reset 2 s into the stop; the engine has no module that could hang
STOP_CUT_OFF_S = 10.0  # the stop's own cut-offs end it before: a failing run leaves nothing running either

pytestmark = [pytest.mark.our_engine("stops an engine of its own"), pytest.mark.timeout(30)]


def _upgrade_request(path: str = "/") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


@contextlib.asynccontextmanager
async def _peer(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()


async def _silent_worker(stack: contextlib.AsyncExitStack, port: int) -> asyncio.StreamReader:
    """A worker upgraded on ``port`` that from then on reads nothing and answers nothing."""
    reader, writer = await stack.enter_async_context(_peer(port))
    writer.write(_upgrade_request())
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert answer.startswith(b"HTTP/1.1 101"), answer
    return reader


async def _stop_within_bound(engine: Engine, before: set[asyncio.Task[object]]) -> None:
    """Stop ``engine``; fail when that takes over :data:`STOP_BOUND_S` or leaves a task of the engine running."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    stop = asyncio.ensure_future(engine.stop())
    await asyncio.wait_for(stop, STOP_CUT_OFF_S)
    took = loop.time() - began
    left = {task for task in asyncio.all_tasks() - before if task is not asyncio.current_task()}
    assert took < STOP_BOUND_S, f"Engine.stop() took {took:.1f} s"
    assert left == set(), [closing.awaiting(task) for task in left]


async def _dropped(reader: asyncio.StreamReader) -> None:
    """``reader``'s connection ends (reset, or a Close then EOF): the engine let go of it."""
    with contextlib.suppress(ConnectionResetError, asyncio.IncompleteReadError):
        await asyncio.wait_for(reader.readexactly(1 << 20), 5)


@pytest.fixture
def closing_began(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set once the listener begins to close the connections it knows of."""
    began = asyncio.Event()
    close_within = engine_server.close_within

    async def noted_close_within(*args: object, **kwargs: object) -> None:
        began.set()
        await close_within(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine_server, "close_within", noted_close_within)
    return began


async def test_an_upgrade_accepted_while_the_stop_closes_the_port_is_closed_within_the_bound(
        closing_began: asyncio.Event) -> None:
    before = set(asyncio.all_tasks())
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[]))
    await engine.start()
    try:
        port = engine.port  # the port has no socket once the stop closed it
        async with contextlib.AsyncExitStack() as peers:
            first = await _silent_worker(peers, port)
            stop = asyncio.ensure_future(_stop_within_bound(engine, before))
            await asyncio.wait_for(closing_began.wait(), 5)
            # the listener began closing the connections it knew of: a worker arriving now
            late: asyncio.StreamReader | None = None
            try:
                late = await _silent_worker(peers, port)
            except (ConnectionRefusedError, ConnectionResetError, asyncio.IncompleteReadError):
                pass  # the port no longer accepts
            except AssertionError as refused:
                assert "HTTP/1.1 503" in str(refused), refused  # accepted before, answered once the port closed
            await stop
            await _dropped(first)
            if late is not None:
                await _dropped(late)
    finally:
        await engine.stop()


async def test_a_peer_stalled_in_its_upgrade_request_is_reset_within_the_stops_bound() -> None:
    before = set(asyncio.all_tasks())
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[]))
    await engine.start()
    try:
        async with contextlib.AsyncExitStack() as peers:
            reader, writer = await peers.enter_async_context(_peer(engine.port))
            writer.write(_upgrade_request()[:30])  # half a request line, then nothing
            await writer.drain()
            # the engine's side of it exists once the listener answered a complete upgrade on another connection
            await _silent_worker(peers, engine.port)
            await _stop_within_bound(engine, before)
            with contextlib.suppress(ConnectionResetError):
                assert await asyncio.wait_for(reader.read(), 5) == b""  # dropped, with no answer
    finally:
        await engine.stop()


async def test_an_upgrade_request_sent_during_the_stop_is_refused_at_once(closing_began: asyncio.Event) -> None:
    """A worker connected before the stop, its upgrade request sent once the stop began closing the port: answered
    503 (websockets' answer once the port closed), not let in to be waited for."""
    before = set(asyncio.all_tasks())
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[]))
    await engine.start()
    try:
        async with contextlib.AsyncExitStack() as peers:
            await _silent_worker(peers, engine.port)  # holds the close of the known connections 2 s
            reader, writer = await peers.enter_async_context(_peer(engine.port))
            stop = asyncio.ensure_future(_stop_within_bound(engine, before))
            await asyncio.wait_for(closing_began.wait(), 5)
            writer.write(_upgrade_request())
            answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 1)
            assert answer.startswith(b"HTTP/1.1 503"), answer
            await stop
    finally:
        await engine.stop()


async def test_an_engine_started_again_after_a_stop_serves_workers_and_stops_within_the_bound() -> None:
    before = set(asyncio.all_tasks())
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[]))
    try:
        for _ in range(2):
            await engine.start()
            worker = await RawWorker.connect(engine.url)
            assert await worker.result_of("engine::workers::list", {}) is not None
            assert await worker.result_of("engine::workers::list", {}) is not None  # not closed on arrival
            await _stop_within_bound(engine, before)
            await asyncio.wait_for(worker.ws.wait_closed(), 5)
            assert worker.ws.close_code == 1001  # the engine's close, not ours
    finally:
        await engine.stop()
