"""Over TLS, a relay's large frames go out through the transport (no private socket to send on) and a reader
reads its guessed whole frames through asyncio's TLS layer: random frame-size mixes arrive byte for byte both ways
(SHA-256 compared)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import ssl
from typing import Any

import pytest
import websockets
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request

from iii import ws_fastpath
from iii.channel_end import ChannelEndClosed
from iii.channels import _connect
from tests.integration.channels.test_attack_channels_today import tls_contexts
from tests.integration.channels.test_r1_frame_mix import _sizes

pytestmark = pytest.mark.timeout(30)
tls = tls_contexts  # the fixture, shared


@pytest.mark.parametrize("seed", range(2))
async def test_server_frames_over_tls_arrive_byte_for_byte(tls: tuple[ssl.SSLContext, ssl.SSLContext], seed: int,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    server_tls, client_tls = tls
    connect = websockets.connect

    def connect_tls(url: str, **kw: Any) -> Any:
        return connect(url, **{**kw, "ssl": client_tls})

    monkeypatch.setattr(websockets, "connect", connect_tls)
    rng = random.Random(seed)
    sizes = [size for size in _sizes(rng, 16 << 20) if size <= 1 << 20]  # the frames a relay passes on
    sent = hashlib.sha256()
    one_sends: list[bool] = []
    real = ws_fastpath._Corked._send_with_corked

    def watched(self: ws_fastpath._Corked, part: bytes) -> bool:
        one_sends.append(real(self, part))
        return one_sends[-1]

    monkeypatch.setattr(ws_fastpath._Corked, "_send_with_corked", watched)
    guesses: list[bool] = []
    guess = ws_fastpath.FrameReader.next_frame_buffer

    def guessed(self: ws_fastpath.FrameReader) -> memoryview | None:
        buffer = guess(self)
        guesses.append(buffer is not None)
        return buffer

    monkeypatch.setattr(ws_fastpath.FrameReader, "next_frame_buffer", guessed)

    async def handler(ws: ServerConnection) -> None:
        for number in range(0, len(sizes), 3):
            batch = [(False, rng.randbytes(size)) for size in sizes[number:number + 3]]
            for _, payload in batch:
                sent.update(payload)
            await ws_fastpath.send_server_frames(ws, batch)
        await ws.close()

    def fast(ws: ServerConnection, _: Request) -> None:
        ws_fastpath.enable_fast_receive(ws)

    async with serve(handler, "127.0.0.1", 0, ssl=server_tls, max_size=None, compression=None,
                     process_request=fast, create_connection=ws_fastpath.server_factory()) as server:
        port = server.sockets[0].getsockname()[1]
        end = await _connect(f"wss://127.0.0.1:{port}/ws/channels/x?key=k&dir=read", "x")
        got = hashlib.sha256()
        count = 0

        async def read_all() -> None:
            nonlocal count
            while True:
                try:
                    _, data = await end.receive()
                except ChannelEndClosed:  # the server closed: the end of the stream
                    return
                got.update(data)
                count += len(data)

        await asyncio.wait_for(read_all(), 20)
    assert count == sum(sizes)
    assert got.hexdigest() == sent.hexdigest()
    assert one_sends and not any(one_sends), "over TLS a large frame must go out through the transport"
    assert any(guesses), "the reader read no guessed whole frame through TLS"
