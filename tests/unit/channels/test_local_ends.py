"""In-process channel ends (``ChannelRelay.open_local``): same queue, bounds, close codes and cleanup as sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from iii.channels import build_channel_url
from iii_engine.channels import ChannelRefused, ChannelRelay, LocalChannelEnd

OPTS: dict[str, Any] = {"ping_interval": None, "compression": None, "max_size": None}


def local(relay: ChannelRelay, ref: dict[str, str]) -> LocalChannelEnd:
    return relay.open_local(ref["channel_id"], ref["access_key"], ref["direction"])


async def closed_with(end: LocalChannelEnd) -> ConnectionClosed:
    """Read ``end`` until it closes; the exception it closed with (messages are dropped)."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await end.recv()
    return info.value


async def test_local_writer_to_socket_reader_in_order(any_relay: tuple[str, ChannelRelay]) -> None:
    base, relay = any_relay
    refs = relay.create(4, owner=None)
    writer = local(relay, refs["writer"])
    messages: list[str | bytes] = [b"a", "text", b"b" * 70_000, b""]
    r = refs["reader"]
    async with websockets.connect(build_channel_url(base, r["channel_id"], r["access_key"], "read"), **OPTS) as ws:
        for message in messages:
            await writer.send(message)
        await writer.close()
        got = [message async for message in ws]
        code = ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None
    assert got == messages
    assert code == (1005 if relay.production_mode else 1000)
    await asyncio.wait_for(relay.wait_idle(), 5)


async def test_socket_writer_to_local_reader_and_async_for(any_relay: tuple[str, ChannelRelay]) -> None:
    base, relay = any_relay
    refs = relay.create(None, owner=None)
    reader = local(relay, refs["reader"])
    w = refs["writer"]
    async with websockets.connect(build_channel_url(base, w["channel_id"], w["access_key"], "write"), **OPTS) as ws:
        for i in range(50):
            await ws.send(i.to_bytes(2, "big"))
    got = [message async for message in reader]
    assert got == [i.to_bytes(2, "big") for i in range(50)]
    assert not reader.is_open
    await asyncio.wait_for(relay.wait_idle(), 5)


async def test_socket_writer_abort_reaches_local_reader_as_4001(relay: tuple[str, ChannelRelay]) -> None:
    base, r = relay
    refs = r.create(None, owner=None)
    reader = local(r, refs["reader"])
    w = refs["writer"]
    async with websockets.connect(build_channel_url(base, w["channel_id"], w["access_key"], "write"), **OPTS) as ws:
        await ws.send(b"partial")
        await ws.close(4000, "boom")
    exc = await closed_with(reader)
    assert isinstance(exc, ConnectionClosedError)
    assert exc.rcvd is not None and exc.rcvd.code == 4001 and "4000" in exc.rcvd.reason


async def test_local_writer_abort_and_bad_code_abort_local_reader() -> None:
    relay = ChannelRelay()
    for how in ("abort", "code"):
        refs = relay.create(None, owner=None)
        writer, reader = local(relay, refs["writer"]), local(relay, refs["reader"])
        await writer.send(b"x")
        if how == "abort":
            writer.abort()
        else:
            await writer.close(4000, "handler failed")
        exc = await closed_with(reader)
        assert exc.rcvd is not None and exc.rcvd.code == 4001, how
        assert ("dropped" if how == "abort" else "handler failed") in exc.rcvd.reason
    await asyncio.wait_for(relay.wait_idle(), 5)
    await relay.close()


async def test_backpressure_bounds_messages_and_bytes() -> None:
    relay = ChannelRelay(max_queued_bytes=10_000)
    refs = relay.create(3, owner=None)
    channel_id = refs["writer"]["channel_id"]
    writer, reader = local(relay, refs["writer"]), local(relay, refs["reader"])

    async def produce(size: int, count: int) -> None:
        for _ in range(count):
            await writer.send(b"x" * size)

    # Count bound: 3 in the queue, 1 waiting in the local end, the producer blocked on the next one.
    producing = asyncio.ensure_future(produce(10, 100))
    await asyncio.wait_for(relay.wait_full(channel_id), 5)
    stats = relay.stats(channel_id)
    assert stats["queued"] == 3 and stats["socket_bytes"] == 10
    assert not producing.done()
    got = 0
    async for message in reader:
        got += len(message)
        if got == 1000:
            break
    await producing
    assert relay.stats(channel_id)["peak"] == 3
    # Byte bound: 4 KB messages stop at 12 KB queued (10 000 + one message), whatever the message count.
    refs = relay.create(100, owner=None)
    channel_id = refs["writer"]["channel_id"]
    writer, reader = local(relay, refs["writer"]), local(relay, refs["reader"])
    producing = asyncio.ensure_future(produce(4000, 20))
    await asyncio.wait_for(relay.wait_full(channel_id), 5)
    assert relay.stats(channel_id)["queued_bytes"] == 12_000
    assert not producing.done()
    producing.cancel()
    await relay.close()


async def test_reader_leaving_closes_local_writer_with_4002() -> None:
    relay = ChannelRelay()
    refs = relay.create(1, owner=None)
    writer, reader = local(relay, refs["writer"]), local(relay, refs["reader"])
    await writer.send(b"1")
    assert await reader.recv() == b"1"
    await reader.close()
    with pytest.raises(ConnectionClosed) as info:
        for _ in range(10):
            await writer.send(b"more")
    assert info.value.rcvd is not None and info.value.rcvd.code == 4002
    await asyncio.wait_for(relay.wait_idle(), 5)


async def test_production_reader_leaving_drops_local_writer_without_code() -> None:
    relay = ChannelRelay(production_mode=True)
    refs = relay.create(1, owner=None)
    writer, reader = local(relay, refs["writer"]), local(relay, refs["reader"])
    await reader.close()
    with pytest.raises(ConnectionClosed) as info:
        for _ in range(10):
            await writer.send(b"more")
    assert info.value.rcvd is None
    await asyncio.wait_for(relay.wait_idle(), 5)


async def test_discard_closes_both_local_ends() -> None:
    relay = ChannelRelay()
    refs = relay.create(1, owner=None)
    writer, reader = local(relay, refs["writer"]), local(relay, refs["reader"])
    await writer.send(b"1")
    await writer.send(b"2")  # in the local end: the queue holds one
    relay.discard(refs["writer"]["channel_id"])
    exc = await closed_with(reader)
    assert exc.rcvd is not None and (exc.rcvd.code, exc.rcvd.reason) == (4001, "channel discarded")
    with pytest.raises(ConnectionClosed) as info:
        await writer.send(b"3")
    assert info.value.rcvd is not None and (info.value.rcvd.code, info.value.rcvd.reason) == (4002, "channel discarded")
    assert len(relay) == 0


async def test_refusals_second_attach_and_expiry() -> None:
    relay = ChannelRelay(attach_timeout_s=0.2, max_message_size=8)
    refs = relay.create(None, owner=None)
    writer_ref = refs["writer"]
    with pytest.raises(ChannelRefused) as refused:
        relay.open_local(writer_ref["channel_id"], "wrong", "write")
    assert (refused.value.status, refused.value.message) == (404, "Channel not found")
    with pytest.raises(ChannelRefused, match=r"\(400\)"):
        relay.open_local(writer_ref["channel_id"], writer_ref["access_key"], "sideways")
    writer = local(relay, writer_ref)
    second = local(relay, writer_ref)
    exc = await closed_with(second)
    assert exc.rcvd is not None and exc.rcvd.code == 4009
    # The reader never attaches: the writer is closed with 4003 once the attach deadline passes.
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await writer.send(b"x")
    assert info.value.rcvd is not None and info.value.rcvd.code == 4003
    await relay.close()


async def test_oversize_message_closes_writer_1009_and_aborts_reader() -> None:
    relay = ChannelRelay(max_message_size=8)
    refs = relay.create(None, owner=None)
    writer, reader = local(relay, refs["writer"]), local(relay, refs["reader"])
    await writer.send(b"ok")
    await writer.send(b"much too long")
    assert await reader.recv() == b"ok"
    exc = await closed_with(reader)
    assert exc.rcvd is not None and exc.rcvd.code == 4001 and "13 bytes" in exc.rcvd.reason
    with pytest.raises(ConnectionClosed) as info:
        await writer.send(b"x")
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    await asyncio.wait_for(relay.wait_idle(), 5)


async def test_wrong_direction_use_and_shutdown() -> None:
    relay = ChannelRelay()
    refs = relay.create(None, owner=None)
    writer, reader = local(relay, refs["writer"]), local(relay, refs["reader"])
    with pytest.raises(TypeError, match="read end"):
        await reader.send(b"x")
    with pytest.raises(TypeError, match="int"):
        await writer.send(5)  # type: ignore[arg-type]
    await writer.send(b"1")
    assert await reader.recv() == b"1"  # both ends are attached now
    waiting = asyncio.ensure_future(reader.recv())
    unstarted = local(relay, relay.create(None, owner=None)["reader"])
    await relay.close()
    with pytest.raises(ConnectionClosed) as info:
        await waiting
    # Shutdown closes ends with 1001, the woken reader loop too (it closed with 4003, as if the channel expired).
    assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    # An end opened just before shutdown is closed the same way, never left hanging.
    late = (await closed_with(unstarted)).rcvd
    assert late is not None and late.code == 1001
