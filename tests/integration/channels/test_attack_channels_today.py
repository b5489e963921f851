"""Attack on today's channel data path (cc5f206, b483277, 17095f6: the SDK writer masks and writes a large frame
256 KiB at a time as views and waits for its transport buffer to empty; the relay's cork hands large parts and
corked frames to the transport as views) and on channels.max_open (7ed544d), end to end through our engine.

What a view handed to a transport points at must never change before the kernel took it: every such view must be
of an immutable ``bytes``, checked here on every write while slow readers make sends partial, several channels share
the thread, writes are cancelled midway and the caller scribbles over its buffer after each write. The bytes on the
wire are checked frame by frame against an encoding made here. Guards (they pass before and after today's work),
but for the REST API one: before ae6604c a request at the limit got a bare 500 and left its first channel behind
until the attach timeout."""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import random
import shutil
import socket
import ssl
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.utils import apply_mask

from iii import ws_fastpath
from iii.channel_end import FRAME_SIZE_HEADER
from iii.channels import ChannelAbortedError, ChannelClosedError, ChannelReader, ChannelWriter, _connect
from iii.iii import III
from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.config import ChannelSettings
from tests.integration.engine.raw import RawWorker

pytestmark = pytest.mark.our_engine("reads our relay's state and counts its transport writes")

EDGES = [1, 125, 126, 127, 65535, 65536, 65537, 262143, 262144, 262145, 983040, 1048575, 1048576, 1048577,
         (1 << 20) + 14, 3 << 20]


@pytest.fixture
def transport_writes(monkeypatch: pytest.MonkeyPatch) -> Iterator[collections.Counter[str]]:
    """Counts what is handed to socket transports, by kind (``partial`` when the socket did not take it all); a
    view of anything but ``bytes`` fails the test at once."""
    from asyncio import selector_events

    counts: collections.Counter[str] = collections.Counter()
    cls: Any = selector_events._SelectorSocketTransport  # type: ignore[attr-defined]
    write = cls.write

    def checked(self: Any, data: bytes | bytearray | memoryview) -> None:
        if isinstance(data, memoryview):
            assert type(data.obj) is bytes, f"a view of a {type(data.obj).__name__} handed to the transport"
        assert not isinstance(data, bytearray), "a bytearray handed to the transport"
        write(self, data)
        kind = type(data).__name__
        counts[kind] += 1
        if self.get_write_buffer_size():
            counts[f"partial {kind}"] += 1

    monkeypatch.setattr(cls, "write", checked)
    yield counts


async def _channel_through(worker: III, seed: int, total: int, cancel: bool) -> tuple[int, int]:
    """Writes of edge and random sizes, from a buffer scribbled over after each write, to a reader that dawdles;
    with ``cancel``, a 16 MiB write is cancelled once the writer waits for its socket (the reader stalled), its
    buffer scribbled over, and the writer closed. The reader must get exactly what was sent up to some point
    after the last completed write; a write cancelled part-way aborts the stream, so the close then raises and the
    reader ends with ChannelAbortedError instead of an end of stream. (bytes read, writes cancelled)"""
    rng = random.Random(seed)
    channel = await worker.create_channel_async(buffer_size=1 if cancel else None)
    sent = bytearray()
    done = 0
    cancelled = 0
    reading = asyncio.Event()
    reading.set()

    async def write() -> None:
        nonlocal done, cancelled
        while len(sent) < total:
            size = min(rng.choice(EDGES) if rng.random() < 0.6 else rng.randrange(1, 3 << 20), total - len(sent))
            if cancel and len(sent) > total // 2:
                size = 16 << 20
            buffer = bytearray(rng.randbytes(size))
            sent.extend(buffer)
            if size == 16 << 20:
                reading.clear()
                task = asyncio.ensure_future(channel.writer.write(buffer))
                end = channel.writer._end
                while not task.done() and not (end is not None and end.ws.paused):
                    await asyncio.sleep(0)  # until the write waits for its socket, a partial send in its buffer
                    end = channel.writer._end
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                cancelled += 1
                buffer[:] = bytes(size)
                reading.set()
                # part of it went out: the stream is aborted (a close delivering it would hand over a short stream)
                with pytest.raises(ChannelClosedError, match="aborted"):
                    await channel.writer.close_async()
                return
            await channel.writer.write(buffer if rng.random() < 0.5 else memoryview(buffer))
            done = len(sent)
            buffer[:] = bytes(size)  # the caller reuses its buffer: nothing of it may still be on its way
        await channel.writer.close_async()

    digest = hashlib.sha256()
    count = 0

    async def read() -> None:
        nonlocal count
        while True:
            await reading.wait()
            try:
                chunk = await channel.reader.read_chunk()
            except ChannelAbortedError:
                assert cancel, f"seed {seed}: aborted without a cancelled write"
                return
            assert not (chunk is None and cancel), f"seed {seed}: a stream cut by a cancelled write ended normally"
            if chunk is None:
                return
            digest.update(chunk)
            count += len(chunk)
            if rng.random() < 0.2:
                await asyncio.sleep(0.001)  # slow: the relay's and the writer's sends go partial

    await asyncio.wait_for(asyncio.gather(write(), read()), 60)
    assert done <= count <= len(sent), (seed, done, count, len(sent))
    assert digest.digest() == hashlib.sha256(bytes(sent[:count])).digest(), f"seed {seed}: corrupted bytes"
    return count, cancelled


@pytest.mark.parametrize("frames", ["invited", "64k"])
async def test_writes_arrive_intact_through_partial_sends_of_views(
        frames: str, transport_writes: collections.Counter[str]) -> None:
    settings = ChannelSettings(max_message_size=65536) if frames == "64k" else ChannelSettings()
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[], channels=settings)) as engine:
        worker = III(engine.url)
        await worker.connect_async()
        try:
            results = await asyncio.gather(*(_channel_through(worker, seed, 24 << 20, cancel=seed % 2 == 1)
                                             for seed in range(4)))
        finally:
            await worker.shutdown_async()
        await asyncio.wait_for(engine.channels.wait_idle(), 10)
    assert sum(count for count, _ in results) > 48 << 20
    assert sum(cancelled for _, cancelled in results) == 2
    assert transport_writes["partial memoryview"] > 0, transport_writes  # the case under attack did happen


def _parse(stream: bytes) -> list[tuple[int, bytes, bytes]]:
    """(first byte, the header without its key, unmasked payload) of each masked frame in ``stream``."""
    frames = []
    at = 0
    while at < len(stream):
        b0, b1 = stream[at], stream[at + 1]
        assert b1 & 0x80, "an unmasked client frame"
        size, head = b1 & 0x7F, 2
        if size == 126:
            size, head = struct.unpack_from("!H", stream, at + 2)[0], 4
        elif size == 127:
            size, head = struct.unpack_from("!Q", stream, at + 2)[0], 10
        key = stream[at + head : at + head + 4]
        payload = apply_mask(stream[at + head + 4 : at + head + 4 + size], key)
        frames.append((b0, stream[at : at + head], payload))
        at += head + 4 + size
    assert at == len(stream)
    return frames


def _head(opcode: int, size: int) -> bytes:
    if size < 126:
        return bytes((0x80 | opcode, 0x80 | size))
    if size < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    return struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)


@pytest.mark.parametrize("invite", [None, 262144, 1 << 20])
@pytest.mark.parametrize("slow", [False, True], ids=["fast", "slow-peer"])
async def test_the_writer_puts_exactly_the_expected_frames_on_the_wire(
        invite: int | None, slow: bool, transport_writes: collections.Counter[str]) -> None:
    captured = bytearray()
    finished = asyncio.get_running_loop().create_future()
    guid = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key"))
        extra = b"" if invite is None else b"X-III-Channel-Frame-Size: %d\r\n" % invite
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + base64.b64encode(hashlib.sha1(key + guid).digest()) + b"\r\n"
                     + extra + b"\r\n")
        while chunk := await reader.read(4096 if slow else 1 << 20):
            captured.extend(chunk)
            if slow:
                await asyncio.sleep(0)
        writer.close()
        finished.set_result(None)

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    if slow:
        for sock in server.sockets:  # inherited by the accepted socket: the writer's sends go partial
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    port = server.sockets[0].getsockname()[1]
    end = await _connect(f"ws://127.0.0.1:{port}/ws/channels/x?key=k&dir=write", "x")
    frame_size = invite or 65536
    rng = random.Random(7)
    expected: list[tuple[int, bytes, bytes]] = []
    for i, size in enumerate(EDGES + [rng.randrange(1, 4 << 20) for _ in range(8)]):
        data = bytearray(rng.randbytes(size))
        await end.send(memoryview(data))
        for at in range(0, size, frame_size):
            chunk = bytes(data[at : at + frame_size])
            expected.append((0x82, _head(2, len(chunk)), chunk))
        data[:] = bytes(size)
        if i % 5 == 0:
            text = b'{"n": %d}' % i
            await end.send(text, text=True)
            expected.append((0x81, _head(1, len(text)), text))
    ws_fastpath.flush(end.ws)
    end.ws.transport.close()  # after what it holds: no Close frame to parse
    await asyncio.wait_for(finished, 30)
    server.close()
    got = _parse(bytes(captured))
    assert len(got) == len(expected)
    for n, (frame, want) in enumerate(zip(got, expected, strict=True)):
        assert frame == want, n
    if slow:
        assert transport_writes["partial memoryview"] > 0, transport_writes


async def test_a_writer_gone_mid_frame_aborts_the_stream_for_the_reader() -> None:
    # The engine reads a large frame's payload straight into its buffer: a writer whose connection ends halfway
    # through one must abort the channel (never end it cleanly with the bytes before it).
    from bench.chaos.common import RawWebSocket

    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[])) as engine:
        refs = engine.channels.create(None, owner=None)
        writer_ref, reader_ref = refs["writer"], refs["reader"]
        port = int(engine.url.rsplit(":", 1)[1].split("/")[0])
        raw = await RawWebSocket.connect(
            port, f"/ws/channels/{writer_ref['channel_id']}?key={writer_ref['access_key']}&dir=write")
        key = b"\x01\x02\x03\x04"
        whole = struct.pack("!BBQ", 0x82, 0x80 | 127, 983040) + key + apply_mask(bytes(983040), key)
        raw.send_raw(whole)  # one whole large frame: reads now stop at frame boundaries
        raw.send_raw(whole[: len(whole) // 2])
        reader = ChannelReader(engine.url, reader_ref)
        first = await asyncio.wait_for(reader.read_chunk(), 10)
        assert first == bytes(983040)
        await raw.writer.drain()
        raw.writer.close()  # FIN halfway through the second frame
        with pytest.raises(ChannelAbortedError, match="writer connection dropped"):
            while (chunk := await asyncio.wait_for(reader.read_chunk(), 10)) is not None:
                assert len(chunk) == 983040


async def test_finished_and_expired_channels_give_their_slots_back() -> None:
    settings = ChannelSettings(max_open=1, attach_timeout_ms=100)
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[], channels=settings)) as engine:
        worker = await RawWorker.connect(engine.url)
        for _ in range(3):  # a channel used and finished
            refs = await worker.result_of("engine::channels::create", {})
            refused = await worker.call("engine::channels::create", {})
            assert refused["error"]["code"] == "channel_limit"
            writer = ChannelWriter(engine.url, refs["writer"])
            reader = ChannelReader(engine.url, refs["reader"])
            await writer.write(b"x" * 70000)
            await writer.close_async()
            assert await reader.read_all() == b"x" * 70000
            await asyncio.wait_for(engine.channels.wait_idle(), 5)
        await worker.result_of("engine::channels::create", {})  # a channel never attached: forgotten at 100 ms
        await asyncio.wait_for(engine.channels.wait_idle(), 5)
        refs = await worker.result_of("engine::channels::create", {})
        writer = ChannelWriter(engine.url, refs["writer"])  # only the writer attaches: expires too
        await writer.write(b"y")
        await asyncio.wait_for(engine.channels.wait_idle(), 5)
        assert "writer" in await worker.result_of("engine::channels::create", {})


async def test_a_rest_request_at_max_open_is_refused_naming_the_limit_and_leaves_no_channel() -> None:
    spec = ModuleSpec("modules::api::RestApiModule", {"host": "127.0.0.1", "port": 0})
    settings = ChannelSettings(max_open=3)
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[spec], channels=settings)) as engine:
        module: Any = engine.module("http_api")
        worker = await RawWorker.connect(engine.url)
        await worker.register("f")
        await worker.send({"type": "registertrigger", "id": "t", "trigger_type": "http", "function_id": "f",
                           "config": {"api_path": "f", "http_method": "GET"}})
        await worker.sync()
        for _ in range(2):
            await worker.result_of("engine::channels::create", {})
        async with httpx.AsyncClient(base_url=module.base_url, timeout=10) as client:
            response = await client.get("/f")
        assert len(engine.channels) == 2, "the request's first channel was left behind"
        assert response.status_code == 503 and "channels.max_open" in response.text, \
            (response.status_code, response.text)


@pytest.fixture
def tls_contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) TLS contexts around a throwaway self-signed certificate for 127.0.0.1."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make a certificate with")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=30)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cert)
    return server, client


@pytest.mark.parametrize("invite", [None, 1 << 20])
@pytest.mark.parametrize("through", ["channels-url", "tls-transport"])
async def test_a_channel_writer_over_tls_does_not_stall(
        invite: int | None, through: str, tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # cc5f206 gave SDK channel sockets write marks (0, 0). asyncio's TLS transport pauses writing at size >= high:
    # at a high mark of 0 it pauses with nothing buffered, then flips between resume and pause on every empty
    # flush, so a wss:// writer could wait in drain for a resume that never came (it did, at once, here).
    # "tls-transport": the (0, 0) marks reach the connection, as they do for a ws:// URL through an https://
    # proxy (TLS the URL does not show); the connection itself must see the TLS transport.
    server_tls, client_tls = tls_contexts
    connect = websockets.connect
    extra: dict[str, Any] = {"ssl": client_tls}
    if through == "tls-transport":
        extra["write_limit"] = ws_fastpath.CLIENT_WRITE_BUFFER

    def connect_tls(url: str, **kw: Any) -> Any:
        return connect(url, **{**kw, **extra})

    monkeypatch.setattr(websockets, "connect", connect_tls)
    digest = hashlib.sha256()
    count = 0
    ended = asyncio.get_running_loop().create_future()

    async def handler(ws: ServerConnection) -> None:
        nonlocal count
        async for message in ws:
            assert isinstance(message, bytes)
            digest.update(message)
            count += len(message)
            await asyncio.sleep(0)
        ended.set_result(None)

    def invite_frames(_: ServerConnection, __: Request, response: Response) -> Response:
        if invite is not None:
            response.headers[FRAME_SIZE_HEADER] = str(invite)
        return response

    async with serve(handler, "127.0.0.1", 0, ssl=server_tls, max_size=None, compression=None,
                     process_response=invite_frames) as server:
        port = server.sockets[0].getsockname()[1]
        end = await _connect(f"wss://127.0.0.1:{port}/ws/channels/x?key=k&dir=write", "x")
        assert end.frame_size == (invite or 65536)
        rng = random.Random(3)
        sent = hashlib.sha256()
        total = 0

        async def send_all() -> None:
            nonlocal total
            for size in EDGES * 2:
                data = rng.randbytes(size)
                sent.update(data)
                total += size
                await end.send(data)
            await end.aclose()

        await asyncio.wait_for(send_all(), 20)
        await asyncio.wait_for(ended, 20)
    assert (count, digest.digest()) == (total, sent.digest())
