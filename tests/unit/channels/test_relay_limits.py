"""Relay limits added after review: ``discard``, the per-channel byte budget, and the socket frame queue."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from iii_engine.channels import DEFAULT_MAX_QUEUED_BYTES, ChannelRelay

from .relay_server import relay_server
from .test_relay import connect, drain

MIB = 1024 * 1024


async def test_discard_forgets_an_unattached_channel_and_is_idempotent(relay: tuple[str, ChannelRelay]) -> None:
    _, r = relay
    refs = r.create(None, owner="w")
    channel_id = refs["reader"]["channel_id"]
    r.discard(channel_id)
    r.discard(channel_id)
    r.discard("no-such-channel")
    assert len(r) == 0
    assert r.check(channel_id, refs["reader"]["access_key"], "read") == (404, "Channel not found")


async def test_discard_closes_attached_ends_with_their_codes(relay: tuple[str, ChannelRelay]) -> None:
    base, r = relay
    refs = r.create(4, owner="w")
    writer = await connect(base, refs["writer"])
    reader = await connect(base, refs["reader"])
    await writer.send(b"x")
    assert await reader.recv() == b"x"
    r.discard(refs["writer"]["channel_id"])
    assert len(r) == 0
    _, reader_code, reader_reason = await asyncio.wait_for(drain(reader), 5)
    _, writer_code, writer_reason = await asyncio.wait_for(drain(writer), 5)
    assert (reader_code, reader_reason) == (4001, "channel discarded")
    assert (writer_code, writer_reason) == (4002, "channel discarded")


async def test_discard_ends_a_writer_blocked_on_a_full_queue(relay: tuple[str, ChannelRelay]) -> None:
    base, r = relay
    refs = r.create(1, owner="w")
    channel_id = refs["writer"]["channel_id"]
    writer = await connect(base, refs["writer"])

    async def write_forever() -> None:
        while True:
            await writer.send(b"y" * 65536)

    task = asyncio.ensure_future(write_forever())
    await asyncio.wait_for(r.wait_full(channel_id), 10)
    r.discard(channel_id)
    with pytest.raises(Exception) as caught:
        await asyncio.wait_for(task, 10)
    assert writer.protocol.close_rcvd is not None
    assert writer.protocol.close_rcvd.code == 4002, caught.value


def test_byte_budget_must_be_positive() -> None:
    assert ChannelRelay().max_queued_bytes == DEFAULT_MAX_QUEUED_BYTES == 16 * MIB
    with pytest.raises(ValueError, match="max_queued_bytes must be >= 1, got 0"):
        ChannelRelay(max_queued_bytes=0)
    with pytest.raises(ValueError, match="max_channel_bytes must be >= 0 or None, got -1"):
        ChannelRelay(max_channel_bytes=-1)


async def test_large_messages_into_a_stalled_reader_stay_within_the_byte_budget() -> None:
    """8 MiB messages, 16 MiB budget, reader not attached yet: the queue holds 2 messages, the socket at most 1."""
    async with relay_server(ChannelRelay(max_message_size=64 * MIB)) as (base, r):
        refs = r.create(None, owner="w")  # 64 messages by count: only the byte budget can stop the writer
        channel_id = refs["writer"]["channel_id"]
        writer = await connect(base, refs["writer"])
        messages = [bytes([n]) * (8 * MIB) for n in range(12)]

        async def write_all() -> None:
            for message in messages:
                await writer.send(message)
            await writer.close()

        task = asyncio.ensure_future(write_all())
        await asyncio.wait_for(r.wait_full(channel_id), 20)
        stats = r.stats(channel_id)
        assert stats["queued_bytes"] == 16 * MIB and stats["queued"] == 2
        socket_bytes = stats["socket_bytes"]
        assert socket_bytes is not None and socket_bytes <= 8 * MIB
        assert not task.done()  # the rest waits in the writer, held back by TCP backpressure
        reader = await connect(base, refs["reader"])
        digest = hashlib.sha256()
        count = 0
        async for message in reader:
            assert isinstance(message, bytes)
            digest.update(message)
            count += 1
            if channel_id in r:
                peak = r.stats(channel_id)["peak_bytes"]
                assert peak is not None and peak <= 16 * MIB  # the deepest the queue ever got, in bytes
        await task
        assert count == 12
        assert digest.hexdigest() == hashlib.sha256(b"".join(messages)).hexdigest()
        assert reader.protocol.close_rcvd is not None and reader.protocol.close_rcvd.code == 1000
        await asyncio.wait_for(r.wait_idle(), 5)


def test_channels_past_max_open_are_refused_naming_the_setting_and_a_discard_makes_room() -> None:
    from iii_engine.channels import DEFAULT_MAX_OPEN_CHANNELS, TooManyChannels

    assert ChannelRelay().max_open == DEFAULT_MAX_OPEN_CHANNELS == 100_000
    with pytest.raises(ValueError, match="max_open must be >= 1, got 0"):
        ChannelRelay(max_open=0)
    relay = ChannelRelay(max_open=2)
    first = relay.create(None, owner=None)["writer"]["channel_id"]
    relay.create(None, owner="w")
    with pytest.raises(TooManyChannels, match=r"^too many open channels \(channels.max_open 2\)$"):
        relay.create(None, owner="w")
    relay.discard(first)
    relay.create(None, owner=None)  # room again


@pytest.mark.parametrize("production_mode", [False, True])
def test_one_workers_channels_past_max_open_per_worker_are_refused_others_still_get_theirs(
        production_mode: bool) -> None:
    from iii_engine.channels import DEFAULT_MAX_OPEN_PER_WORKER, TooManyChannels

    assert ChannelRelay().max_open_per_worker == DEFAULT_MAX_OPEN_PER_WORKER == 20_000
    with pytest.raises(ValueError, match="max_open_per_worker must be >= 1, got 0"):
        ChannelRelay(max_open_per_worker=0)
    relay = ChannelRelay(max_open=10, max_open_per_worker=2, production_mode=production_mode)
    leaky = [relay.create(None, owner="leaky")["writer"]["channel_id"] for _ in range(2)]
    with pytest.raises(TooManyChannels, match=r"^too many open channels created by this worker "
                                              r"\(channels.max_open_per_worker 2\)$"):
        relay.create(None, owner="leaky")
    relay.create(None, owner="other")  # another worker, and the engine's own channels, are not held up
    relay.create(None, owner=None)
    relay.create(None, owner=None)
    relay.discard(leaky[0])  # a channel that goes gives its place back to its creator
    relay.create(None, owner="leaky")
