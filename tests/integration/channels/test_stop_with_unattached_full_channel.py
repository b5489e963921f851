"""The engine's stop while a channel's loop waits on its other end.

The relay stops reading a writer while the channel's queue is full: that is its backpressure. With no reader, nothing
ever makes room; a reader with no writer waits for a first message that never comes. The listener's close of their
sockets did not wake those loops, so the websockets server's close waited for their handlers and ``Engine.stop()``
(and ``iii-engine`` on SIGTERM) for the channel's attach deadline, 300 s by default. The README promises that every
wait on a peer during a stop is bounded; the stop now ends every channel first, each attached end closed with 1001
(a Close without a code in ``production_mode``, as the production engine sends).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from iii import III
from iii.channels import build_channel_url
from iii_engine import Engine, closing
from iii_engine.channels.driver import Driver, LiveChannel
from iii_engine.channels.machine import Close, Side
from iii_engine.config import ChannelSettings
from tests.conftest import engine_test_config

STOP_BOUND_S = 5.0  # the stop closes every socket within 2 s; this engine has no store that could hang
ATTACH_DEADLINE_S = 12.0  # the channel expires then, which ended the stop's wait before: keeps a failing run short
OPTS: dict[str, Any] = {"ping_interval": None, "compression": None, "max_size": None}

pytestmark = pytest.mark.our_engine("stops an engine of its own")


def _engine(production_mode: bool = False) -> Engine:
    return Engine(config=engine_test_config(channels=ChannelSettings(
        attach_timeout_ms=int(ATTACH_DEADLINE_S * 1000), production_mode=production_mode)))


@pytest.fixture
def attached(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set once the relay's handler attached a channel end (the upgrade's answer comes before that)."""
    event = asyncio.Event()
    attach = Driver.attach

    def noted_attach(ch: LiveChannel, side: Side) -> Close | None:
        refusal = attach(ch, side)
        event.set()
        return refusal

    monkeypatch.setattr(Driver, "attach", staticmethod(noted_attach))
    return event


async def _stop_within_bound(engine: Engine) -> None:
    """Stop ``engine``, failing when that takes over :data:`STOP_BOUND_S` (the stop is then awaited to its end)."""
    stop = asyncio.ensure_future(engine.stop())
    done, _ = await asyncio.wait({stop}, timeout=STOP_BOUND_S)
    # The attach deadline ends a stop still waiting, so the failing case leaves nothing running either.
    await asyncio.wait_for(stop, ATTACH_DEADLINE_S + 5)
    assert stop in done, f"Engine.stop() still running {STOP_BOUND_S:g} s later"


async def _close_code(ws: ClientConnection) -> int | None:
    """The code of the Close the engine sent ``ws`` (1005: one without a code), once the connection ended."""
    await asyncio.wait_for(ws.wait_closed(), 5)
    close = ws.protocol.close_rcvd
    return None if close is None else close.code


async def test_stop_is_bounded_with_a_writer_blocked_on_an_unattached_channel() -> None:
    engine = _engine()
    await engine.start()
    client = III(engine.url)
    writing: asyncio.Future[None] | None = None
    try:
        await client.connect_async()
        channel = await client.create_channel_async()
        block = os.urandom(1 << 20)

        async def write_forever() -> None:
            while True:
                await channel.writer.write(block)

        writing = asyncio.ensure_future(write_forever())
        await asyncio.wait_for(engine.channels.wait_full(channel.writer.ref.channel_id), 10)
        await _stop_within_bound(engine)
    finally:
        if writing is not None:
            writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)
        await client.shutdown_async()
        await engine.stop()


@pytest.mark.parametrize("production_mode", [False, True], ids=["ours", "production"])
async def test_a_writer_blocked_on_a_full_unattached_channel_is_told_the_engine_stops(production_mode: bool) -> None:
    engine = _engine(production_mode)
    await engine.start()
    writer: ClientConnection | None = None
    writing: asyncio.Future[None] | None = None
    try:
        ref = engine.channels.create(4, owner=None)["writer"]
        writer = await websockets.connect(
            build_channel_url(engine.url, ref["channel_id"], ref["access_key"], "write"), **OPTS)
        block = os.urandom(256 * 1024)

        async def write_forever(ws: ClientConnection) -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                while True:
                    await ws.send(block)

        writing = asyncio.ensure_future(write_forever(writer))
        await asyncio.wait_for(engine.channels.wait_full(ref["channel_id"]), 10)
        await _stop_within_bound(engine)
        # The relay's own close goes first: 1001 as the listener's, none in production mode (production sends none).
        assert await _close_code(writer) == (1005 if production_mode else 1001)
    finally:
        if writing is not None:
            writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)
        if writer is not None:
            await writer.close()
        await engine.stop()


@pytest.mark.parametrize("production_mode", [False, True], ids=["ours", "production"])
async def test_stop_is_bounded_with_a_reader_whose_writer_never_attached(
        production_mode: bool, attached: asyncio.Event) -> None:
    # Ours watches the reader socket and saw the listener's close; production_mode reads no reader socket, and its
    # reader loop waited for a first message until the attach deadline.
    engine = _engine(production_mode)
    await engine.start()
    reader: ClientConnection | None = None
    try:
        ref = engine.channels.create(4, owner=None)["reader"]
        reader = await websockets.connect(
            build_channel_url(engine.url, ref["channel_id"], ref["access_key"], "read"), **OPTS)
        await asyncio.wait_for(attached.wait(), 5)
        await _stop_within_bound(engine)
        assert await _close_code(reader) == (1005 if production_mode else 1001)
    finally:
        if reader is not None:
            await reader.close()
        await engine.stop()


@pytest.mark.parametrize("production_mode", [False, True], ids=["ours", "production"])
async def test_a_stop_mid_transfer_ends_both_ends_with_a_prefix_of_the_stream_delivered(production_mode: bool) -> None:
    engine = _engine(production_mode)
    await engine.start()
    writer: ClientConnection | None = None
    reader: ClientConnection | None = None
    tasks: list[asyncio.Future[Any]] = []
    try:
        refs = engine.channels.create(8, owner=None)
        reader = await websockets.connect(build_channel_url(
            engine.url, refs["reader"]["channel_id"], refs["reader"]["access_key"], "read"), **OPTS)
        writer = await websockets.connect(build_channel_url(
            engine.url, refs["writer"]["channel_id"], refs["writer"]["access_key"], "write"), **OPTS)
        sent: list[bytes] = []
        got: list[bytes] = []
        flowing = asyncio.Event()

        async def write(ws: ClientConnection) -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                for i in range(1_000_000):
                    message = i.to_bytes(4, "big") * (1 + i % 5000)
                    sent.append(message)
                    await ws.send(message)

        async def read(ws: ClientConnection) -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                while True:
                    message = await ws.recv()
                    assert isinstance(message, bytes)
                    got.append(message)
                    if len(got) == 200:
                        flowing.set()

        tasks = [asyncio.ensure_future(write(writer)), asyncio.ensure_future(read(reader))]
        await asyncio.wait_for(flowing.wait(), 10)
        await _stop_within_bound(engine)
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert got == sent[:len(got)]  # in order, none lost before the cut, none made up
        code = 1005 if production_mode else 1001
        assert (await _close_code(writer), await _close_code(reader)) == (code, code)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for ws in (writer, reader):
            if ws is not None:
                await ws.close()
        await engine.stop()


async def test_a_stop_drops_a_silent_peer_whose_close_began_and_leaves_no_task(attached: asyncio.Event) -> None:
    """A writer whose side never answers a Close (its host went silent; its loop was closed): the relay's own close of
    it, begun as the stop ends every channel, waited websockets' close_timeout (10 s) and the listener's close left it
    out (websockets lists closing connections nowhere public), so the stop let the port's close go after 6 s with the
    connection's handler still running on the loop. Before: ``Engine.stop() still running 5 s later``."""
    engine = _engine()
    before = asyncio.all_tasks()
    await engine.start()
    peer: asyncio.StreamWriter | None = None
    try:
        ref = engine.channels.create(4, owner=None)["writer"]
        host, port = engine.url.removeprefix("ws://").rsplit(":", 1)
        incoming, peer = await asyncio.open_connection(host, int(port))
        peer.write((f"GET /ws/channels/{ref['channel_id']}?key={ref['access_key']}&dir=write HTTP/1.1\r\n"
                    f"Host: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        answer = await asyncio.wait_for(incoming.readuntil(b"\r\n\r\n"), 5)
        assert answer.startswith(b"HTTP/1.1 101"), answer
        await asyncio.wait_for(attached.wait(), 5)
        await _stop_within_bound(engine)  # from here on the peer reads nothing and answers nothing
        left = {task for task in asyncio.all_tasks() - before if task is not asyncio.current_task()}
        assert left == set(), [closing.awaiting(task) for task in left]
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):  # dropped, not left waiting
            await asyncio.wait_for(incoming.readexactly(1 << 20), 5)
    finally:
        if peer is not None:
            peer.close()
        await engine.stop()
