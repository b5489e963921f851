"""Fast channel sockets read into one reused buffer (iii.ws_fastpath._BufferedFeed) and the relay hands a socket
several queued messages per write: what is kept never aliases the reused buffer, the transport goes back to
websockets at a hand-over, and order, kinds and bounds stay exact."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import websockets
from websockets.asyncio.server import ServerConnection, serve

from iii import ws_fastpath
from iii.channel_end import BrokenChannel, EndOfChannel, WebSocketEnd
from iii.channels import ChannelReader, ChannelWriter
from iii.ws_fastpath import RECEIVE_CHUNK, FastServerConnection, FrameReader, _BufferedFeed, client_frame
from iii_engine.channels import ChannelRelay
from iii_engine.channels.machine import ChannelMachine

from .relay_server import relay_server

OPTS: dict[str, Any] = {"ping_interval": None, "compression": None, "max_size": None}


def test_frame_reader_copies_out_of_a_reused_buffer() -> None:
    # A buffered transport reuses its buffer for the next read: a partial frame kept for later and the bytes
    # handed over to websockets must not change when the buffer is overwritten.
    key = os.urandom(4)
    frame = client_frame(False, b"A" * 1000, key)
    close = b"\x88\x82" + key + bytes(a ^ b for a, b in zip(b"\x03\xe8", key, strict=False))
    data = frame + close
    buf = bytearray(len(data))
    reader = FrameReader(masked=True)
    buf[:600] = data[:600]
    assert reader.feed(memoryview(buf)[:600]) == ([], [], None)
    buf[:] = b"\xff" * len(buf)  # the next read lands in the same buffer
    buf[: len(data) - 600] = data[600:]
    messages, control, rest = reader.feed(memoryview(buf)[: len(data) - 600])
    buf[:] = b"\x00" * len(buf)
    assert messages == [(False, b"A" * 1000)] and control == []
    assert rest == close and isinstance(rest, bytes)


class _Conn:
    def __init__(self) -> None:
        self.fed: list[bytes] = []

    def _feed(self, data: memoryview) -> None:
        self.fed.append(bytes(data))


def test_receive_buffer_starts_small_doubles_while_reads_fill_it_and_is_shared() -> None:
    vars(ws_fastpath._RECEIVE).pop("view", None)  # this thread starts without one
    feed, other = _BufferedFeed(_Conn()), _BufferedFeed(_Conn())  # type: ignore[arg-type]
    sizes = []
    for _ in range(8):
        buf = feed.get_buffer(-1)
        sizes.append(len(buf))
        buf[:] = b"x" * len(buf)
        feed.buffer_updated(len(buf))  # a full read
    assert sizes[0] == RECEIVE_CHUNK[0] and max(sizes) == RECEIVE_CHUNK[1]
    assert sizes == sorted(sizes)
    buf = feed.get_buffer(-1)
    feed.buffer_updated(10)  # a short read keeps the size
    assert len(feed.get_buffer(-1)) == len(buf) == RECEIVE_CHUNK[1]
    # One buffer per thread, whatever the number of sockets: an idle socket holds none.
    assert other.get_buffer(-1).obj is feed.get_buffer(-1).obj
    other.get_buffer(-1)[:3] = b"abc"
    other.buffer_updated(3)
    assert other._conn.fed == [b"abc"]  # type: ignore[attr-defined]


async def test_transport_reads_into_the_buffer_and_goes_back_to_websockets_at_a_hand_over() -> None:
    received: list[object] = []
    protocols: list[object] = []
    conns: list[ServerConnection] = []

    async def handler(ws: ServerConnection) -> None:
        conns.append(ws)
        end = WebSocketEnd(ws)
        try:
            while True:
                received.append(await end.receive())
                protocols.append(ws.transport.get_protocol())
        except (EndOfChannel, BrokenChannel) as exc:
            received.append(exc)

    def fast(conn: ServerConnection, request: Any) -> None:
        ws_fastpath.enable_fast_receive(conn)

    async with serve(handler, "127.0.0.1", 0, create_connection=FastServerConnection, process_request=fast,
                     **OPTS) as server:
        port = server.sockets[0].getsockname()[1]
        async with websockets.connect(f"ws://127.0.0.1:{port}", **OPTS) as ws:
            big = os.urandom(3 << 20)  # frames split across many reads of the reused buffer
            await ws.send(b"first")
            await ws.send(big)
            await (await ws.ping(b"p"))  # answered by websockets while the buffer feeds the fast path
            await ws.send([b"frag", b"mented"])  # handed over: websockets reads the socket again
            await ws.send(b"last")
    assert received[:4] == [(False, b"first"), (False, big), (False, b"fragmented"), (False, b"last")]
    assert isinstance(received[4], EndOfChannel)
    assert isinstance(protocols[0], _BufferedFeed) and isinstance(protocols[1], _BufferedFeed)
    assert protocols[3] is conns[0]


async def test_the_relay_hands_a_reader_several_queued_messages_per_write(monkeypatch: Any) -> None:
    batches: list[int] = []
    send_frames = ws_fastpath.send_server_frames

    async def counting(ws: Any, messages: list[tuple[bool, bytes]]) -> None:
        batches.append(len(messages))
        await send_frames(ws, messages)

    monkeypatch.setattr(ws_fastpath, "send_server_frames", counting)
    async with relay_server(ChannelRelay()) as (base, relay):
        refs = relay.create(16, owner=None)
        writer = ChannelWriter(base, refs["writer"])
        expected: list[bytes | str] = []
        for i in range(40):  # queued before the reader attaches; the writer waits while 16 are queued
            if i % 5 == 0:
                expected.append(f"note {i}")
            else:
                expected.append(os.urandom(1000 + i))
        reader = ChannelReader(base, refs["reader"])

        async def produce() -> None:
            for item in expected:
                if isinstance(item, str):
                    await writer.send_message_async(item)
                else:
                    await writer.write(item)
            await writer.close_async()

        async def consume() -> list[bytes | str]:
            got: list[bytes | str] = []
            while (item := await reader.recv()) is not None:
                got.append(item)
            return got

        produced = asyncio.ensure_future(produce())
        await relay.wait_full(refs["writer"]["channel_id"])
        assert relay.stats(refs["writer"]["channel_id"])["peak"] == 16  # never more than buffer_size queued
        got = await consume()
        await produced
    assert got == expected  # order, boundaries and text/binary kinds kept across batches
    assert max(batches) > 1


def test_reader_more_stops_where_reader_step_would() -> None:
    m = ChannelMachine("c", capacity=8)
    for data in (b"a", b"bb", b"ccc"):
        m.writer_message(False, data)
    assert m.reader_step() == (False, b"a")
    m.failure = (4001, "writer aborted")  # an abort is delivered at once: no more messages after it
    assert m.reader_more(1 << 20) == []
    m.failure = None
    assert m.reader_more(1) == [(False, b"bb")]  # the budget is passed by at most one message
    assert m.reader_more(1 << 20) == [(False, b"ccc")] and m.queued_bytes == 0


class _FakeLibc:
    def __init__(self, answer: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.answer = answer

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.answer


def test_allocator_tuning_sets_both_thresholds_unless_the_process_chose_its_own() -> None:
    libc = _FakeLibc()
    assert ws_fastpath.tune_allocator({}, libc) == "tuned"
    assert libc.calls == [(-3, ws_fastpath.ALLOCATOR_TUNING[0]), (-1, ws_fastpath.ALLOCATOR_TUNING[1])]
    for environ, why in (({"III_MALLOC_TUNING": "0"}, "off: III_MALLOC_TUNING=0"),
                         ({"MALLOC_TRIM_THRESHOLD_": "1"}, "off: the process sets MALLOC_TRIM_THRESHOLD_"),
                         ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}, "off: the process sets GLIBC_TUNABLES")):
        untouched = _FakeLibc()
        assert ws_fastpath.tune_allocator(environ, untouched) == why and untouched.calls == []
    assert ws_fastpath.tune_allocator({}, _FakeLibc(answer=0)) == "off: mallopt refused"


def test_splitting_frames_does_not_fault_pages_in_again_once_tuned() -> None:
    # Before the tuning, each 1 MiB of 64 KiB payloads freed at the top of the heap went back to the system and
    # was faulted in again by the next: about 13 page faults per frame (measured). Counts, not timings.
    import platform
    import resource

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    assert ws_fastpath.tune_allocator({}) == "tuned"
    data = memoryview(bytearray(b"".join(client_frame(False, os.urandom(65536), os.urandom(4)) for _ in range(16))))
    reader = FrameReader(masked=True)
    reader.feed(data)  # the heap grows once
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(50):
        assert len(reader.feed(data)[0]) == 16
    per_frame = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / (50 * 16)
    assert per_frame < 1, per_frame


async def test_the_first_fast_socket_tunes_the_allocator() -> None:
    async with relay_server(ChannelRelay()) as (base, relay):
        refs = relay.create(None, owner=None)
        writer, reader = ChannelWriter(base, refs["writer"]), ChannelReader(base, refs["reader"])
        await writer.write(b"x")
        await writer.close_async()
        assert await reader.read_all() == b"x"
    assert ws_fastpath.ALLOCATOR_STATE is not None  # "tuned" on glibc, else why not (counted as a fallback)


def test_each_thread_has_its_own_receive_buffer() -> None:
    import threading

    seen: list[object] = []
    thread = threading.Thread(target=lambda: seen.append(ws_fastpath._receive_view().obj))
    thread.start()
    thread.join(5)
    assert seen and seen[0] is not ws_fastpath._receive_view().obj


async def test_a_close_right_behind_refused_messages_still_gets_the_refusal() -> None:
    # A writer sends past its byte quota and its Close in one go (one read for the relay): websockets must not
    # answer that Close (1000) before the relay has seen the messages before it and refused the writer (1009).
    async with relay_server(ChannelRelay(max_channel_bytes=10_000)) as (base, relay):
        for _ in range(5):
            refs = relay.create(None, owner=None)
            reader = ChannelReader(base, refs["reader"])
            ws = await websockets.connect(
                f"{base}/ws/channels/{refs['writer']['channel_id']}?key={refs['writer']['access_key']}&dir=write",
                **OPTS)
            key = os.urandom(4)
            close = b"\x88\x82" + key + bytes(a ^ b for a, b in zip(b"\x03\xe8", key * 2, strict=False))
            # 12 messages of 1,000 bytes (over the quota at the 11th) and the Close: one read for the relay.
            ws.transport.write(b"".join(client_frame(False, bytes(1000), os.urandom(4)) for _ in range(12)) + close)
            await asyncio.wait_for(ws.wait_closed(), 10)
            assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1009
            try:
                await reader.read_all()
            except Exception as exc:  # the reader hears of the abort
                assert "quota" in str(exc)
            else:
                raise AssertionError("the reader got a normal end of stream")


def test_would_refuse_matches_what_writer_message_refuses() -> None:
    m = ChannelMachine("c", capacity=8, max_message_size=100, max_bytes=250)
    assert not m.would_refuse([(False, b"a" * 100), (True, "é".encode())])
    assert m.would_refuse([(False, b"a" * 101)])  # too big
    assert m.would_refuse([(True, b"\xff")])  # not UTF-8
    m.writer_message(False, b"a" * 100)
    assert not m.would_refuse([(False, b"a" * 100), (False, b"a" * 50)])
    assert m.would_refuse([(False, b"a" * 100), (False, b"a" * 51)])  # over the quota with what was counted
    assert m.writer_message(False, b"a" * 100) is None and m.writer_message(False, b"a" * 51) is not None
