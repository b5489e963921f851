"""``ChannelRelay.fill``: a whole stream written in-process at once (the REST API's request bodies), and local read
ends served straight from the queue."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from iii.channels import build_channel_url
from iii_engine.channels import ChannelRefused, ChannelRelay

OPTS: dict[str, Any] = {"ping_interval": None, "compression": None, "max_size": None}


def fill(relay: ChannelRelay, ref: dict[str, str], data: bytes, chunk_size: int = 4) -> None:
    relay.fill(ref["channel_id"], ref["access_key"], data, chunk_size)


async def read_socket(base: str, ref: dict[str, str]) -> tuple[list[bytes], int | None]:
    url = build_channel_url(base, ref["channel_id"], ref["access_key"], "read")
    async with websockets.connect(url, **OPTS) as ws:
        got = [m for m in [message async for message in ws] if isinstance(m, bytes)]
        return got, ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None


async def test_filled_body_reaches_a_socket_reader_whole_in_chunks(any_relay: tuple[str, ChannelRelay]) -> None:
    base, relay = any_relay
    body = os.urandom(300_000)  # more than the channel's buffer of messages or bytes: fill never waits
    refs = relay.create(2, owner=None)
    fill(relay, refs["writer"], body, 64 * 1024)
    got, code = await read_socket(base, refs["reader"])
    assert b"".join(got) == body and [len(c) for c in got[:-1]] == [64 * 1024] * 4
    assert code == (1005 if relay.production_mode else 1000)
    await asyncio.wait_for(relay.wait_idle(), 5)


async def test_empty_fill_is_an_immediate_end_of_stream_for_a_local_reader() -> None:
    relay = ChannelRelay()
    refs = relay.create(None, owner=None)
    fill(relay, refs["writer"], b"")
    r = refs["reader"]
    reader = relay.open_local(r["channel_id"], r["access_key"], "read")
    with pytest.raises(ConnectionClosedOK):
        await reader.recv()
    assert len(relay) == 0  # both ends done: the channel is gone at once


async def test_local_reader_reads_a_filled_channel_then_ends() -> None:
    relay = ChannelRelay()
    refs = relay.create(None, owner=None)
    fill(relay, refs["writer"], b"abcdefghij", 4)
    r = refs["reader"]
    reader = relay.open_local(r["channel_id"], r["access_key"], "read")
    assert [message async for message in reader] == [b"abcd", b"efgh", b"ij"]
    assert not reader.is_open and len(relay) == 0


async def test_fill_over_the_byte_quota_aborts_the_reader(relay: tuple[str, ChannelRelay]) -> None:
    base, r = relay
    refs = r.create(None, owner=None, max_bytes=6)
    fill(r, refs["writer"], b"x" * 10, 4)
    url = build_channel_url(base, refs["reader"]["channel_id"], refs["reader"]["access_key"], "read")
    async with websockets.connect(url, **OPTS) as ws:
        with pytest.raises(ConnectionClosed) as info:  # an abort, never a short body that looks complete
            await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 4001 and "quota" in info.value.rcvd.reason


async def test_fill_refusals() -> None:
    relay = ChannelRelay()
    refs = relay.create(None, owner=None)
    writer = refs["writer"]
    with pytest.raises(ChannelRefused, match=r"\(404\)"):
        relay.fill(writer["channel_id"], "wrong", b"x", 4)
    with pytest.raises(ChannelRefused, match=r"\(404\)"):
        relay.fill(writer["channel_id"], refs["reader"]["access_key"], b"x", 4)  # the read key
    fill(relay, writer, b"x")
    with pytest.raises(ChannelRefused, match=r"\(409\)"):
        fill(relay, writer, b"y")  # the write end is taken
    relay.discard(writer["channel_id"])


async def test_second_local_reader_is_refused_with_4009() -> None:
    relay = ChannelRelay()
    r = relay.create(None, owner=None)["reader"]
    first = relay.open_local(r["channel_id"], r["access_key"], "read")
    second = relay.open_local(r["channel_id"], r["access_key"], "read")
    with pytest.raises(ConnectionClosed) as info:
        await second.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 4009
    assert first.is_open
    await relay.close()
