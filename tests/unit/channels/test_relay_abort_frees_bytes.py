"""A stream that can never be delivered whole leaves the relay at once: the writer aborted, dropped or ran out of
quota before any reader attached (its queued bytes are freed and its channel slot too), or the reader left before
the writer attached. What stays, until the attach deadline, is a small record that tells the end attaching later
why (4001 with the writer's reason, 4002). A stream the writer ended normally keeps its bytes for a late reader."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from iii.channels import ChannelAbortedError, ChannelReader, ChannelWriter
from iii_engine.channels import ChannelRelay

from .relay_server import relay_server
from .test_relay import connect, drain

# Far past every test: only the abort, never the deadline, may end a channel here.
DEADLINE_S = 60.0
IDLE_S = 3.0  # bound on the relay noticing an end's close; the deadline is 20 times that


@pytest.fixture
async def relay() -> AsyncIterator[tuple[str, ChannelRelay]]:
    async with relay_server(ChannelRelay(attach_timeout_s=DEADLINE_S, max_message_size=1 << 20)) as served:
        yield served


async def _wait_idle(r: ChannelRelay) -> None:
    await asyncio.wait_for(r.wait_idle(), IDLE_S)


@pytest.mark.parametrize("how", ["close_4400", "dropped"])
async def test_writer_abort_with_no_reader_frees_bytes_at_once(relay: tuple[str, ChannelRelay], how: str) -> None:
    base, r = relay
    refs = r.create(4, owner="w")
    channel_id = refs["writer"]["channel_id"]
    writer = await connect(base, refs["writer"])
    for _ in range(4):
        await writer.send(b"x" * 100_000)
    await asyncio.wait_for(r.wait_full(channel_id), 5)
    assert r.held_bytes() == 400_000
    if how == "close_4400":
        await writer.close(4400, "wrong function")
    else:
        writer.transport.abort()
    await _wait_idle(r)  # the channel ended with the abort, not at its deadline
    assert (r.held_bytes(), len(r)) == (0, 0)
    _, code, reason = await asyncio.wait_for(drain(await connect(base, refs["reader"])), 5)
    assert code == 4001
    if how == "close_4400":
        assert "4400" in reason and "wrong function" in reason
    else:
        assert "dropped" in reason
    # Told once, like the channel it stands for: then gone.
    assert r.check(channel_id, refs["reader"]["access_key"], "read") == (404, "Channel not found")


async def test_sdk_reader_after_abort_gets_channel_aborted(relay: tuple[str, ChannelRelay]) -> None:
    base, r = relay
    refs = r.create(None, owner="w")
    writer = ChannelWriter(base, refs["writer"])
    await writer.write(b"half a file")
    await writer.abort("producer crashed")
    await _wait_idle(r)
    assert r.held_bytes() == 0
    with pytest.raises(ChannelAbortedError, match="producer crashed") as info:
        await ChannelReader(base, refs["reader"]).read_all()
    assert info.value.code == 4001


async def test_second_writer_on_aborted_channel_gets_4009(relay: tuple[str, ChannelRelay]) -> None:
    base, r = relay
    refs = r.create(None, owner="w")
    writer = await connect(base, refs["writer"])
    await writer.close(4400, "bad input")
    await _wait_idle(r)
    _, code, reason = await drain(await connect(base, refs["writer"]))
    assert code == 4009 and "already attached" in reason
    _, code, reason = await drain(await connect(base, refs["reader"]))  # the record was left for the reader
    assert code == 4001 and "bad input" in reason


async def test_quota_failure_with_no_reader_frees_bytes_at_once(relay: tuple[str, ChannelRelay]) -> None:
    base, r = relay
    refs = r.create(None, owner="w", max_bytes=10_000)
    ref = refs["writer"]
    # In-process, done on return: two messages queued (8192 bytes), the third crosses the quota.
    r.fill(ref["channel_id"], ref["access_key"], b"x" * 100_000, chunk_size=4096)
    assert (r.held_bytes(), len(r)) == (0, 0)
    _, code, reason = await drain(await connect(base, refs["reader"]))
    assert code == 4001 and "quota" in reason


async def test_socket_writer_over_quota_with_no_reader_frees_bytes(relay: tuple[str, ChannelRelay]) -> None:
    base, r = relay
    refs = r.create(None, owner="w", max_bytes=150_000)
    writer = await connect(base, refs["writer"])
    await writer.send(b"a" * 100_000)
    await writer.send(b"b" * 100_000)
    await asyncio.wait_for(writer.wait_closed(), 5)
    assert writer.protocol.close_rcvd is not None and writer.protocol.close_rcvd.code == 1009
    await _wait_idle(r)
    assert r.held_bytes() == 0
    _, code, reason = await drain(await connect(base, refs["reader"]))
    assert code == 4001 and "quota" in reason


async def test_normal_close_keeps_bytes_for_a_late_reader(relay: tuple[str, ChannelRelay]) -> None:
    base, r = relay
    refs = r.create(None, owner="w")
    ref = refs["writer"]
    r.fill(ref["channel_id"], ref["access_key"], b"y" * 10_000, chunk_size=4096)  # writer done on return
    assert (r.held_bytes(), len(r)) == (10_000, 1)
    got, code, _ = await drain(await connect(base, refs["reader"]))
    assert (b"".join(m for m in got if isinstance(m, bytes)), code) == (b"y" * 10_000, 1000)


async def test_socket_writer_normal_close_is_delivered_to_a_late_reader(relay: tuple[str, ChannelRelay]) -> None:
    base, r = relay
    refs = r.create(None, owner="w")
    writer = await connect(base, refs["writer"])
    for i in range(3):
        await writer.send(bytes([i]) * 50_000)
    await writer.close()
    await asyncio.wait_for(writer.wait_closed(), 5)
    got, code, _ = await drain(await connect(base, refs["reader"]))
    assert (got, code) == ([bytes([i]) * 50_000 for i in range(3)], 1000)


async def test_reader_gone_before_writer_frees_the_slot_and_writer_gets_4002(
        relay: tuple[str, ChannelRelay]) -> None:
    base, r = relay
    refs = r.create(None, owner="w")
    reader = await connect(base, refs["reader"])
    await reader.close()
    await _wait_idle(r)  # the reader's leave ended the channel, not its deadline
    writer = await connect(base, refs["writer"])
    _, code, reason = await drain(writer)
    assert code == 4002 and "reader gone" in reason


async def test_aborted_channels_free_their_slots_and_their_records_are_bounded() -> None:
    r = ChannelRelay(attach_timeout_s=DEADLINE_S, max_open=3)
    made = []
    for i in range(5):  # more than max_open: each aborted channel gave its slot back
        refs = r.create(None, owner="w", max_bytes=0)
        ref = refs["writer"]
        r.fill(ref["channel_id"], ref["access_key"], b"z" * (i + 1), chunk_size=1)
        made.append(refs["reader"])
    assert (len(r), r.held_bytes()) == (0, 0)
    # At most max_open records are kept, the oldest dropped first: its late reader gets 404 as after expiry.
    assert [r.check(ref["channel_id"], ref["access_key"], "read") for ref in made] == \
        [(404, "Channel not found")] * 2 + [None] * 3
    reader = r.open_local(made[-1]["channel_id"], made[-1]["access_key"], "read")
    with pytest.raises(ConnectionClosed) as info:
        await reader.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 4001 and "quota" in info.value.rcvd.reason
    await r.close()


async def test_discard_drops_an_aborted_channels_record(relay: tuple[str, ChannelRelay]) -> None:
    base, r = relay
    refs = r.create(None, owner="w", max_bytes=0)
    r.fill(refs["writer"]["channel_id"], refs["writer"]["access_key"], b"z", chunk_size=1)
    r.discard(refs["writer"]["channel_id"])
    with pytest.raises(InvalidStatus) as info:
        await connect(base, refs["reader"])
    assert info.value.response.status_code == 404


async def test_the_record_goes_at_the_channels_attach_deadline() -> None:
    r = ChannelRelay(attach_timeout_s=0.2)
    refs = r.create(None, owner="w", max_bytes=0)
    r.fill(refs["writer"]["channel_id"], refs["writer"]["access_key"], b"z", chunk_size=1)
    ref = refs["reader"]
    assert r.check(ref["channel_id"], ref["access_key"], "read") is None
    # A channel made after it expires after it: its reader's 4003 is the event that the record's deadline passed.
    later = r.create(None, owner="w")["reader"]
    waiting = r.open_local(later["channel_id"], later["access_key"], "read")
    with pytest.raises(ConnectionClosed) as info:
        await asyncio.wait_for(waiting.recv(), 5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4003
    assert r.check(ref["channel_id"], ref["access_key"], "read") == (404, "Channel not found")
    await r.close()
