"""The websockets fast path of channel sockets (iii.ws_fastpath): the feature check, the frame splitter, and the
hand-over to websockets for everything it does not handle, on real sockets."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import pytest
import websockets
from websockets.asyncio.server import ServerConnection, serve

from iii import ws_fastpath
from iii.channel_end import BrokenChannel, EndOfChannel, WebSocketEnd
from iii.channels import ChannelReader, ChannelWriter
from iii.waiters import Signal
from iii.ws_fastpath import FastClientConnection, FastServerConnection, FrameReader, client_frame, server_frame
from iii_engine.channels import ChannelRelay

from .relay_server import relay_server

OPTS: dict[str, Any] = {"ping_interval": None, "compression": None, "max_size": None}


def test_installed_websockets_has_every_internal_the_fast_path_uses() -> None:
    # Fails the day a websockets upgrade moves one of them: the fast path would silently fall back (slower).
    assert ws_fastpath.MISSING == ()
    assert ws_fastpath.AVAILABLE
    assert ws_fastpath.client_factory() is FastClientConnection
    assert ws_fastpath.server_factory() is FastServerConnection


def test_fallbacks_are_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    before = ws_fastpath.FALLBACKS["test reason"]
    with caplog.at_level(logging.INFO, logger="iii.ws_fastpath"):
        ws_fastpath._fallback("test reason")
        ws_fastpath._fallback("test reason")
    assert ws_fastpath.FALLBACKS["test reason"] == before + 2
    assert sum("test reason" in r.message for r in caplog.records) == (1 if before == 0 else 0)


def stream_of(*frames: bytes) -> bytes:
    return b"".join(frames)


@pytest.mark.parametrize("chunk", [1, 3, 7, 4096, 65_547, 1 << 20])
def test_frame_reader_splits_any_chunking(chunk: int) -> None:
    payloads = [b"", b"a" * 125, b"b" * 126, os.urandom(65_536), os.urandom(70_000)]
    data = stream_of(*(client_frame(i == 1, p if i != 1 else b"x" * 125, os.urandom(4))
                       for i, p in enumerate(payloads)))
    reader = FrameReader(masked=True)
    got: list[tuple[bool, bytes]] = []
    for start in range(0, len(data), chunk):
        messages, control, rest = reader.feed(data[start : start + chunk])
        assert control == [] and rest is None
        got.extend(messages)
    assert got == [(False, b""), (True, b"x" * 125), (False, b"b" * 126), (False, payloads[3]), (False, payloads[4])]


def test_frame_reader_passes_pings_and_hands_over_at_close() -> None:
    ping = bytes([0x89, 0x02]) + b"hi"
    close = bytes([0x88, 0x02]) + (1000).to_bytes(2, "big")
    reader = FrameReader(masked=False)
    messages, control, rest = reader.feed(server_frame(False, b"one") + ping + server_frame(True, b"two") + close
                                          + server_frame(False, b"after"))
    assert messages == [(False, b"one"), (True, b"two")]
    assert control == [ping]
    assert rest == close + server_frame(False, b"after")
    assert reader.done
    with pytest.raises(RuntimeError):
        reader.feed(b"x")


@pytest.mark.parametrize("frame", [
    bytes([0x02, 0x01]) + b"a",                  # a fragment (FIN clear)
    bytes([0xC2, 0x01]) + b"a",                  # RSV1 set (compression was not negotiated)
    bytes([0x83, 0x01]) + b"a",                  # reserved opcode
    bytes([0x82, 0x81]) + b"keyk" + b"a",        # masked, but a client reader expects unmasked frames
    bytes([0x89, 0x7E, 0x00, 0x80]) + b"p" * 128,  # a control frame longer than 125 bytes
])
def test_frame_reader_hands_anything_unusual_to_websockets(frame: bytes) -> None:
    reader = FrameReader(masked=False)
    messages, control, rest = reader.feed(server_frame(False, b"ok") + frame)
    assert messages == [(False, b"ok")] and control == [] and rest == frame


def test_frame_reader_hands_over_an_oversize_message_whole() -> None:
    reader = FrameReader(masked=False, max_size=10)
    big = server_frame(False, b"y" * 11)
    assert reader.feed(big[:1]) == ([], [], None)  # header incomplete: kept
    assert reader.feed(big[1:]) == ([], [], big)  # the length says too big: handed over from its first byte


async def test_signal_allows_one_waiter() -> None:
    signal = Signal()
    signal.set()  # nobody waits: no effect, nothing remembered
    first = asyncio.ensure_future(signal.wait())
    await asyncio.sleep(0)
    assert signal.waiting
    with pytest.raises(RuntimeError, match="one waiter"):
        await signal.wait()
    signal.set()
    await first
    assert not signal.waiting


async def serve_echo_of_pings(received: list[object]) -> Any:
    async def handler(ws: ServerConnection) -> None:
        end = WebSocketEnd(ws)
        try:
            while True:
                received.append(await end.receive())
        except (EndOfChannel, BrokenChannel) as exc:
            received.append(exc)

    def fast(conn: ServerConnection, request: Any) -> None:
        ws_fastpath.enable_fast_receive(conn)

    return serve(handler, "127.0.0.1", 0, create_connection=FastServerConnection, process_request=fast, **OPTS)


async def test_pings_and_fragments_mid_stream_keep_order_and_content() -> None:
    received: list[object] = []
    async with await serve_echo_of_pings(received) as server:
        port = server.sockets[0].getsockname()[1]
        async with websockets.connect(f"ws://127.0.0.1:{port}", **OPTS) as ws:  # a plain client
            await ws.send(b"first")
            pong = await ws.ping(b"p")
            await pong  # websockets answered the ping while the data went through the fast path
            await ws.send([b"frag", b"mented"])  # fragmented: handed over to websockets for good
            await ws.send("text")
            await ws.send(b"last")
    assert received[:4] == [(False, b"first"), (False, b"fragmented"), (True, b"text"), (False, b"last")]
    assert isinstance(received[4], EndOfChannel)


async def test_corked_frames_precede_the_close() -> None:
    # Many small writes are corked into one send per loop turn; the Close must still come after all of them.
    async with relay_server(ChannelRelay()) as (base, relay):
        refs = relay.create(None, owner=None)
        writer, reader = ChannelWriter(base, refs["writer"]), ChannelReader(base, refs["reader"])

        async def produce() -> None:
            for i in range(2000):
                await writer.write(i.to_bytes(4, "big"))
            await writer.close_async()

        _, data = await asyncio.gather(produce(), reader.read_all())
    assert data == b"".join(i.to_bytes(4, "big") for i in range(2000))
    assert isinstance(reader._end, WebSocketEnd) and isinstance(reader._end.ws, FastClientConnection)


async def test_frames_arriving_with_the_handshake_response_are_not_lost() -> None:
    # The relay writes queued messages the moment the reader attaches, often in the same TCP segment as the 101.
    async with relay_server(ChannelRelay()) as (base, relay):
        for _ in range(20):
            refs = relay.create(None, owner=None)
            writer = ChannelWriter(base, refs["writer"])
            await writer.write(b"early" * 100)
            await writer.send_message_async("note")
            await writer.close_async()
            reader = ChannelReader(base, refs["reader"])
            assert await reader.recv() == b"early" * 100
            assert await reader.recv() == "note"
            assert await reader.recv() is None


@pytest.mark.parametrize("production", [False, True], ids=["ours", "production"])
async def test_the_public_api_fallback_carries_a_whole_stream(monkeypatch: pytest.MonkeyPatch,
                                                              production: bool) -> None:
    # What a websockets without the internals gets: plain connections, ws.send/recv/close, counted fallbacks.
    monkeypatch.setattr(ws_fastpath, "AVAILABLE", False)
    before = sum(ws_fastpath.FALLBACKS.values())
    async with relay_server(ChannelRelay(production_mode=production)) as (base, relay):
        refs = relay.create(None, owner=None)
        writer, reader = ChannelWriter(base, refs["writer"]), ChannelReader(base, refs["reader"])
        payload = os.urandom(300_000)

        async def produce() -> None:
            await writer.send_message_async("meta")
            await writer.write(payload)
            await writer.close_async()

        texts: list[str] = []
        reader.on_message(texts.append)
        _, data = await asyncio.gather(produce(), reader.read_all())
    assert data == payload and texts == ["meta"]
    assert reader._end is not None and not isinstance(reader._end.ws, FastClientConnection)
    assert sum(ws_fastpath.FALLBACKS.values()) > before
