"""The relay on raw WebSocket clients: keys, directions, close codes, ordering, bounds, lifetime."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from iii.channels import build_channel_url
from iii_engine.channels import ChannelRelay, clamp_buffer_size
from tests.polling import until

OPTS: dict[str, Any] = {"ping_interval": None, "compression": None, "max_size": None}


def url(base: str, ref: dict[str, str], direction: str | None = None) -> str:
    return build_channel_url(base, ref["channel_id"], ref["access_key"], direction or ref["direction"])


async def connect(base: str, ref: dict[str, str], direction: str | None = None) -> ClientConnection:
    return await websockets.connect(url(base, ref, direction), **OPTS)


async def drain(ws: ClientConnection) -> tuple[list[str | bytes], int | None, str]:
    """Every message until close, and the close code/reason received."""
    got: list[str | bytes] = []
    try:
        async for message in ws:
            got.append(message)
    except ConnectionClosed:
        pass
    rcvd = ws.protocol.close_rcvd
    return got, (rcvd.code if rcvd else None), (rcvd.reason if rcvd else "")


def test_buffer_size_is_clamped() -> None:
    assert [clamp_buffer_size(v) for v in (None, -3, 0, 1, 64, 1024, 10_000)] == [64, 1, 1, 1, 64, 1024, 1024]


async def test_refs_have_separate_keys_per_direction(relay: tuple[str, ChannelRelay]) -> None:
    _, r = relay
    refs = r.create(None, owner="w")
    assert refs["writer"]["channel_id"] == refs["reader"]["channel_id"]
    assert refs["writer"]["access_key"] != refs["reader"]["access_key"]
    assert (refs["writer"]["direction"], refs["reader"]["direction"]) == ("write", "read")


async def test_production_mode_uses_one_key(prod_relay: tuple[str, ChannelRelay]) -> None:
    _, r = prod_relay
    refs = r.create(None, owner="w")
    assert refs["writer"]["access_key"] == refs["reader"]["access_key"]
    # dir is not checked against the key in production
    assert r.check(refs["writer"]["channel_id"], refs["writer"]["access_key"], "read") is None


@pytest.mark.parametrize("case", ["wrong_key", "wrong_direction", "unknown_id"])
async def test_wrong_key_or_direction_is_404(relay: tuple[str, ChannelRelay], case: str) -> None:
    base, r = relay
    refs = r.create(None, owner="w")
    ref = dict(refs["writer"])
    if case == "wrong_key":
        ref["access_key"] = "nope"
    elif case == "wrong_direction":
        ref = dict(refs["writer"], direction="read")
    else:
        ref["channel_id"] = "00000000-0000-0000-0000-000000000000"
    with pytest.raises(InvalidStatus) as info:
        await connect(base, ref)
    assert info.value.response.status_code == 404
    assert info.value.response.body is not None and b"Channel not found" in info.value.response.body


async def test_missing_dir_is_400(relay: tuple[str, ChannelRelay]) -> None:
    _, r = relay
    refs = r.create(None, owner="w")
    assert r.check(refs["writer"]["channel_id"], refs["writer"]["access_key"], None) is not None
    assert r.check(refs["writer"]["channel_id"], None, "write")[0] == 400  # type: ignore[index]


async def test_ordered_text_and_binary_then_1000(relay: tuple[str, ChannelRelay]) -> None:
    base, r = relay
    refs = r.create(4, owner="w")
    reader = await connect(base, refs["reader"])
    writer = await connect(base, refs["writer"])
    sent: list[str | bytes] = [b"a", "t1", b"b" * 70_000, "t2", b""]
    for message in sent:
        await writer.send(message)
    await writer.close()
    got, code, _ = await drain(reader)
    assert got == sent
    assert code == 1000
    await asyncio.wait_for(r.wait_idle(), 5)
    assert len(r) == 0


async def test_production_close_has_no_code(prod_relay: tuple[str, ChannelRelay]) -> None:
    base, r = prod_relay
    refs = r.create(None, owner="w")
    writer = await connect(base, refs["writer"])
    await writer.send(b"x")
    await writer.close()
    got, code, _ = await drain(await connect(base, refs["reader"]))
    assert got == [b"x"]
    assert code == 1005


async def test_writer_drop_is_4001(relay: tuple[str, ChannelRelay]) -> None:
    base, r = relay
    refs = r.create(None, owner="w")
    reader = await connect(base, refs["reader"])
    writer = await connect(base, refs["writer"])
    await writer.send(b"partial")
    writer.transport.abort()
    _, code, reason = await drain(reader)
    assert code == 4001
    assert "dropped" in reason


async def test_writer_abnormal_code_is_4001_with_reason(relay: tuple[str, ChannelRelay]) -> None:
    base, r = relay
    refs = r.create(None, owner="w")
    writer = await connect(base, refs["writer"])
    await writer.close(4400, "disk full")
    _, code, reason = await drain(await connect(base, refs["reader"]))
    assert code == 4001
    assert "4400" in reason and "disk full" in reason


async def test_reader_gone_closes_writer_with_4002(relay: tuple[str, ChannelRelay]) -> None:
    base, r = relay
    refs = r.create(None, owner="w")
    writer = await connect(base, refs["writer"])
    reader = await connect(base, refs["reader"])
    await writer.send(b"x")
    assert await reader.recv() == b"x"
    await reader.close()
    await asyncio.wait_for(writer.wait_closed(), 5)
    assert writer.protocol.close_rcvd is not None
    assert writer.protocol.close_rcvd.code == 4002
    await asyncio.wait_for(r.wait_idle(), 5)


async def test_second_connection_gets_4009(relay: tuple[str, ChannelRelay]) -> None:
    base, r = relay
    refs = r.create(None, owner="w")
    first = await connect(base, refs["reader"])
    second = await connect(base, refs["reader"])
    _, code, reason = await drain(second)
    assert code == 4009
    assert "already attached" in reason
    await first.close()


async def test_unattached_end_expires_with_4003() -> None:
    from .relay_server import relay_server

    async with relay_server(ChannelRelay(attach_timeout_s=0.2)) as (base, r):
        refs = r.create(None, owner="w")
        reader = await connect(base, refs["reader"])
        _, code, _ = await asyncio.wait_for(drain(reader), 5)
        assert code == 4003
        assert refs["reader"]["channel_id"] not in r


async def test_owner_disconnect_removes_only_unattached_channels(relay: tuple[str, ChannelRelay]) -> None:
    base, r = relay
    idle = r.create(None, owner="w1")
    busy = r.create(None, owner="w1")
    other = r.create(None, owner="w2")
    reader = await connect(base, busy["reader"])
    r.orphan_grace_s = 0  # (at once: the grace is test_an_orphan_outlives_its_creator_for_a_grace's)
    r.drop_owner("w1")
    assert idle["reader"]["channel_id"] not in r
    assert busy["reader"]["channel_id"] in r
    assert other["reader"]["channel_id"] in r
    await reader.close()


async def test_oversize_message_closes_writer_1009_and_aborts_reader(relay: tuple[str, ChannelRelay]) -> None:
    base, r = relay  # max_message_size = 1 MiB
    refs = r.create(None, owner="w")
    reader = await connect(base, refs["reader"])
    writer = await connect(base, refs["writer"])
    await writer.send(b"z" * ((1 << 20) + 1))
    await asyncio.wait_for(writer.wait_closed(), 5)
    assert writer.protocol.close_rcvd is not None and writer.protocol.close_rcvd.code == 1009
    _, code, _ = await drain(reader)
    assert code == 4001


async def test_reader_pings_are_answered(relay: tuple[str, ChannelRelay]) -> None:
    base, r = relay
    refs = r.create(None, owner="w")
    reader = await connect(base, refs["reader"])
    await asyncio.wait_for(await reader.ping(), 5)  # the pong arrives: the relay reads the reader socket
    await reader.close()


async def test_holds_at_most_buffer_size_messages(relay: tuple[str, ChannelRelay]) -> None:
    base, r = relay
    refs = r.create(3, owner="w")
    writer = await connect(base, refs["writer"])
    writer_done = asyncio.Event()

    async def write_many() -> None:
        for i in range(400):
            await writer.send(i.to_bytes(4, "big") * 16384)
        writer_done.set()

    task = asyncio.create_task(write_many())
    channel_id = refs["writer"]["channel_id"]
    # 400 x 64 KiB is far more than socket buffers absorb, so the relay fills its queue and stops reading.
    await asyncio.wait_for(r.wait_full(channel_id), 10)
    assert r.stats(channel_id)["queued"] == 3
    assert not writer_done.is_set()
    reader = await connect(base, refs["reader"])
    received = 0
    async for message in reader:
        assert (r.stats(channel_id)["queued"] or 0) <= 3
        assert message == received.to_bytes(4, "big") * 16384
        received += 1
        if received == 400:
            break
    # The deepest the queue ever got: proves the bound held throughout, with no timing involved.
    assert r.stats(channel_id)["peak"] == 3
    await task
    await writer.close()
    _, code, _ = await drain(reader)
    assert code == 1000


async def test_byte_quota_closes_writer_1009_and_aborts_reader(relay: tuple[str, ChannelRelay]) -> None:
    base, r = relay
    refs = r.create(None, owner="w", max_bytes=100_000)
    reader = await connect(base, refs["reader"])
    writer = await connect(base, refs["writer"])
    await writer.send(b"a" * 60_000)
    await writer.send(b"b" * 60_000)  # 120 000 > 100 000
    await asyncio.wait_for(writer.wait_closed(), 5)
    assert writer.protocol.close_rcvd is not None
    assert writer.protocol.close_rcvd.code == 1009
    assert "quota of 100000" in writer.protocol.close_rcvd.reason
    got, code, reason = await drain(reader)
    assert code == 4001 and "quota" in reason
    assert sum(len(m) for m in got) <= 100_000


async def test_byte_quota_allows_exactly_the_quota(relay: tuple[str, ChannelRelay]) -> None:
    base, r = relay
    refs = r.create(None, owner="w", max_bytes=1000)
    assert r.stats(refs["writer"]["channel_id"])["max_bytes"] == 1000
    writer = await connect(base, refs["writer"])
    await writer.send(b"x" * 1000)
    await writer.close()
    got, code, _ = await drain(await connect(base, refs["reader"]))
    assert (got, code) == ([b"x" * 1000], 1000)


async def test_relay_default_quota_and_negative_rejected() -> None:
    r = ChannelRelay(max_channel_bytes=10)
    refs = r.create(None, owner=None)
    assert r.stats(refs["writer"]["channel_id"])["max_bytes"] == 10
    with pytest.raises(ValueError, match="max_bytes must be >= 0"):
        r.create(None, owner=None, max_bytes=-1)
    assert ChannelRelay(production_mode=True, max_channel_bytes=10).create(None, None)["writer"]


async def test_an_orphan_outlives_its_creator_for_a_grace(relay: tuple[str, ChannelRelay]) -> None:
    # The reference SDK's create_channel shows a script creating a channel for two workers and exiting: removed at
    # its disconnect, the channel's ends got 404 when they came.
    base, r = relay
    r.orphan_grace_s = 0.3
    handed, unused = r.create(None, owner="script"), r.create(None, owner="script")
    r.drop_owner("script")
    assert handed["reader"]["channel_id"] in r and unused["reader"]["channel_id"] in r  # before: both gone at once
    reader = await connect(base, handed["reader"])
    await until(lambda: unused["reader"]["channel_id"] not in r, within=5)
    assert handed["reader"]["channel_id"] in r  # attached within the grace: kept
    await reader.close()


async def test_orphans_kept_for_the_grace_are_at_most_one_workers_share() -> None:
    # Worker ids are per connection: a creator reconnecting in a loop kept every connection's orphans for the grace
    # and filled max_open for everyone (re-attack on the grace: 5 cycles of 10 filled 50)
    relay = ChannelRelay(max_open=50, max_open_per_worker=10, orphan_grace_s=30)
    for cycle in range(5):
        for _ in range(10):
            relay.create(None, owner=f"w{cycle}")
        relay.drop_owner(f"w{cycle}")
    assert len(relay) == 10  # the first connection's, in their grace; the later ones went at once
    assert "writer" in relay.create(None, owner="other")
    await relay.close()
    assert not relay._orphan_timers
