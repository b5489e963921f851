"""The bytes the relay holds across channels are bounded (attack report on channels, 2).

Each channel's queue was bounded (``max_queued_bytes``, 16 MiB) and their number too, but not the product: one
worker's 40 channels, written and closed with no reader, grew an engine from 47 to 687 MiB, kept for the attach
deadline (300 s). ``max_held_bytes`` (every channel) and ``max_held_bytes_per_worker`` (the channels one worker
created) now stop reading writers past them; a channel whose reader is attached still moves one message at a time.
"""

from __future__ import annotations

import asyncio
import hashlib
import random

import pytest
from websockets.asyncio.client import ClientConnection

from iii.channel_end import WebSocketEnd
from iii_engine.channels import ChannelRelay, HeldBytes
from iii_engine.channels.limits import HELD_BACK_SOCKET_BYTES
from iii_engine.channels.machine import ChannelMachine, Side
from iii_engine.channels.policy import OURS, PRODUCTION
from iii_engine.config import ConfigError, parse_config
from tests.polling import until

from .relay_server import relay_server
from .test_relay import connect, drain

KIB = 1024
MIB = 1024 * KIB


# ---------------------------------------------------------------------------------------------- the machine alone


def test_past_a_bound_only_a_channel_whose_reader_is_attached_takes_a_message_into_its_empty_queue() -> None:
    held = HeldBytes(1000)
    parked = ChannelMachine("parked", capacity=8, held=(held,))
    parked.attach(Side.WRITER)
    read = ChannelMachine("read", capacity=8, held=(held,))
    read.attach(Side.WRITER)
    read.attach(Side.READER)
    assert parked.writer_message(False, b"p" * 1000) is None
    assert held.held == 1000 and held.reached
    assert parked.full and parked.held_back  # no reader: waits
    assert read.room() == 1 and not read.full  # its reader reads: one message at a time
    read.writer_message(False, b"r" * 300)
    assert read.full  # its queue holds one: wait for the reader
    assert read.reader_step() == (False, b"r" * 300)
    assert not read.full and held.held == 1000
    parked.attach(Side.READER)
    assert parked.full  # its queue is not empty: its reader takes it first
    woken: list[str] = []
    parked.wait_for_room(lambda: woken.append("parked"))
    assert parked.reader_step() == (False, b"p" * 1000)
    assert woken == ["parked"] and held.held == 0 and parked.room() == 1000


def test_a_waiting_writer_is_woken_once_below_seven_eighths_of_the_bound() -> None:
    held = HeldBytes(800)
    machine = ChannelMachine("c", capacity=64, held=(held,))
    machine.attach(Side.WRITER)
    for _ in range(16):
        machine.writer_message(False, b"x" * 50)
    woken: list[int] = []
    machine.wait_for_room(lambda: woken.append(held.held))
    machine.attach(Side.READER)
    machine.reader_step()
    assert woken == [] and held.held == 750  # over 7/8 of 800 (700): still waiting
    machine.reader_step()
    assert woken == [700]
    machine.reader_step()
    assert woken == [700]  # once
    with pytest.raises(ValueError, match="must be >= 1"):
        HeldBytes(0)


@pytest.mark.parametrize("policy", [OURS, PRODUCTION], ids=["ours", "production"])
def test_the_bounds_count_every_queued_byte_back_out_whatever_ends_the_channel(policy: object) -> None:
    """A random walk of writes, reads, batches, aborts, readers leaving, discards, expiries and shutdowns over
    channels of two creators: after every step each bound holds exactly what the queues counting against it hold
    (and nothing once every channel's queue is dropped, as the registry does when it forgets one)."""
    rng = random.Random(7)
    everyone = HeldBytes(10_000)
    shares = {"a": HeldBytes(4_000), "b": HeldBytes(4_000)}
    machines: list[tuple[str, ChannelMachine]] = []
    for n in range(12):
        creator = "ab"[n % 2]
        m = ChannelMachine(f"c{n}", capacity=16, max_queued_bytes=3_000, policy=policy,  # type: ignore[arg-type]
                           held=(everyone, shares[creator]))
        m.attach(Side.WRITER)
        machines.append((creator, m))
    for _ in range(3_000):
        creator, m = rng.choice(machines)
        action = rng.random()
        if action < 0.45:
            if not m.full:
                m.writer_message(rng.random() < 0.1, b"t" * rng.randint(0, 700))
        elif action < 0.6:
            if m.reader_state.value == "new":
                m.attach(Side.READER)
            m.reader_step()
        elif action < 0.7:
            m.reader_more(rng.randint(1, 2_000))
        elif action < 0.74:
            m.writer_closed(4001, "abort")
        elif action < 0.78:
            m.reader_left()
        elif action < 0.8:
            m.discard()
        elif action < 0.82:
            m.expire()
        elif action < 0.83:
            m.shutdown()
        elif action < 0.9:
            m.drop_queue()
        assert everyone.held == sum(mm.queued_bytes for _, mm in machines)
        assert all(mm.full == (mm.room() <= 0) for _, mm in machines)  # the hot path's full agrees with room()
        for name, share in shares.items():
            assert share.held == sum(mm.queued_bytes for c, mm in machines if c == name)
        assert all(b.held >= 0 for b in (everyone, *shares.values()))
    for _, m in machines:
        m.drop_queue()
    assert everyone.held == 0 and shares["a"].held == 0 and shares["b"].held == 0
    assert everyone.peak <= 10_000 + 700 and max(s.peak for s in shares.values()) <= 4_000 + 700


def test_defaults_and_bad_bounds_refused_naming_the_setting() -> None:
    relay = ChannelRelay()
    # no engine-wide bound by default: four workers parking their share of a 256 MiB one made every other worker's
    # stream written ahead of its reader wait for the attach deadline (attack of 7d96d2d)
    assert (relay.max_held_bytes, relay.max_held_bytes_per_worker) == (None, 64 * MIB)
    assert relay.held_stats()["max_held_bytes"] is None and not relay._held.reached
    assert parse_config("port: 0", env={}).channels.max_held_bytes is None
    settings = parse_config("channels: {max_held_bytes: 1048576, max_held_bytes_per_worker: 65536}", env={}).channels
    assert (settings.max_held_bytes, settings.max_held_bytes_per_worker) == (MIB, 64 * KIB)
    assert parse_config("port: 0", env={}).channels.max_held_bytes_per_worker == 64 * MIB
    with pytest.raises(ConfigError, match=r"channels\.max_held_bytes_per_worker: must be >= 1, got 0"):
        parse_config("channels: {max_held_bytes_per_worker: 0}", env={})
    with pytest.raises(ValueError, match="max_held_bytes must be >= 1 or None, got 0"):
        ChannelRelay(max_held_bytes=0)
    with pytest.raises(ValueError, match="max_held_bytes_per_worker must be >= 1, got 0"):
        ChannelRelay(max_held_bytes_per_worker=0)


# ---------------------------------------------------------------------------------------------- on real sockets


def _joined(got: list[str | bytes]) -> bytes:
    assert all(isinstance(message, bytes) for message in got)
    return b"".join(message for message in got if isinstance(message, bytes))


async def _write(ws: ClientConnection, messages: list[bytes]) -> None:
    for message in messages:
        await ws.send(message)
    await ws.close()


async def test_one_workers_parked_channels_stop_at_its_share_and_the_rest_waits_lossless() -> None:
    """6 channels of one worker, 1 MiB each in 64 KiB messages, no reader: the share (2 MiB) holds; the writers
    past it wait; readers that come later get every stream whole, and the waiting writers go on."""
    relay = ChannelRelay(max_held_bytes_per_worker=2 * MIB, max_held_bytes=8 * MIB)
    async with relay_server(relay) as (base, r):
        streams = [[bytes([n, k]) * (32 * KIB) for k in range(16)] for n in range(6)]
        refs = [r.create(None, owner="w") for _ in streams]
        writers = [await connect(base, ref["writer"]) for ref in refs]
        tasks = [asyncio.ensure_future(_write(ws, messages)) for ws, messages in zip(writers, streams, strict=True)]
        # The share is reached first: a channel whose writer finished before that is made full by another's
        # message, and nothing of its own (its writer loop ended) would wake a wait_full on it.
        await until(lambda: r.held_stats()["by_worker"].get("w", 0) >= 2 * MIB)
        for ref in refs:  # each channel's writer is no longer read: its stream is all queued, or it waits
            await asyncio.wait_for(r.wait_full(ref["writer"]["channel_id"]), 10)
        stats = r.held_stats()
        assert 2 * MIB <= stats["by_worker"]["w"] <= 2 * MIB + 64 * KIB, stats  # the share and one message
        assert stats["held_bytes"] == r.held_bytes() == stats["by_worker"]["w"]
        for ref, messages in zip(refs, streams, strict=True):
            got, code, _ = await asyncio.wait_for(drain(await connect(base, ref["reader"])), 10)
            assert code == 1000 and hashlib.sha256(_joined(got)).digest() == hashlib.sha256(
                b"".join(messages)).digest()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        await asyncio.wait_for(r.wait_idle(), 5)
        after = r.held_stats()
        assert after["peak_held_bytes"] <= 2 * MIB + 64 * KIB  # never more than the share and one message
        assert (after["held_bytes"], after["by_worker"]) == (0, {})


async def test_a_transfer_whose_reader_reads_goes_through_while_the_bounds_are_full() -> None:
    """Parked channels of this worker and of another take the whole engine's bound and this worker's share: a new
    channel of this worker whose reader reads still carries 8 MiB (never deadlocked by the bytes others hold)."""
    relay = ChannelRelay(max_held_bytes_per_worker=1 * MIB, max_held_bytes=2 * MIB)
    async with relay_server(relay) as (base, r):
        parked = [r.create(None, owner=owner) for owner in ("w", "other", "other")]
        filling = []
        for ref in parked:
            ws = await connect(base, ref["writer"])
            filling.append(asyncio.ensure_future(_write(ws, [b"p" * (64 * KIB)] * 24)))
        for ref in parked:
            await asyncio.wait_for(r.wait_full(ref["writer"]["channel_id"]), 10)
        stats = r.held_stats()
        assert stats["held_bytes"] >= 2 * MIB and stats["by_worker"]["w"] >= 1 * MIB, stats
        live = r.create(None, owner="w")
        reader = await connect(base, live["reader"])
        messages = [bytes([k % 256]) * (256 * KIB) for k in range(32)]
        writing = asyncio.ensure_future(_write(await connect(base, live["writer"]), messages))
        got, code, _ = await asyncio.wait_for(drain(reader), 10)
        await writing
        assert code == 1000 and _joined(got) == b"".join(messages)
        assert r.held_stats()["held_bytes"] <= 2 * MIB + 64 * KIB + 256 * KIB  # the bound, its overshoot, one message
        for task in filling:
            task.cancel()
        await asyncio.gather(*filling, return_exceptions=True)


async def test_a_writer_held_back_by_a_bound_keeps_little_in_its_socket() -> None:
    """A writer kept waiting by a held-bytes bound: its socket's receive buffer goes down to 256 KiB (the relay
    stopped reading it once 4 MiB were unread: 40 such writers held 174 MiB in their sockets besides the bound)."""
    relay = ChannelRelay(max_held_bytes_per_worker=1 * MIB)
    async with relay_server(relay) as (base, r):
        first = r.create(None, owner="w")
        ws = await connect(base, first["writer"])
        await _write(ws, [b"a" * (64 * KIB)] * 16)  # the share, whole: no reader yet
        second = r.create(None, owner="w")
        channel_id = second["writer"]["channel_id"]
        writer = await connect(base, second["writer"])
        task = asyncio.ensure_future(_write(writer, [b"b" * (64 * KIB)] * 512))  # 32 MiB
        await asyncio.wait_for(r.wait_full(channel_id), 10)
        end = r._channels[channel_id].writer_end
        assert isinstance(end, WebSocketEnd)
        await until(lambda: not end.ws.transport.is_reading())  # the relay stopped reading the socket
        socket_bytes = r.stats(channel_id)["socket_bytes"]
        # The mark, and what the socket read that crossed it brought (before: 4.75 MiB, past SOCKET_QUEUE_BYTES).
        assert socket_bytes is not None and socket_bytes <= HELD_BACK_SOCKET_BYTES + 1 * MIB, socket_bytes
        assert r.stats(channel_id)["queued_bytes"] == 0
        got, code, _ = await asyncio.wait_for(drain(await connect(base, second["reader"])), 20)
        assert code == 1000 and len(_joined(got)) == 32 * MIB
        await task
