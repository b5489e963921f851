"""Attack A5 on reserved channels (7a6af28): a fill kept while the channel is only reserved holds no more than the
channel's byte quota lets through (plus the one message that crosses it), as a fill into a live channel did, and
the reader sees the very same stream either way."""

from __future__ import annotations

import os

import pytest
from websockets.exceptions import ConnectionClosed

from iii_engine.channels import ChannelRelay


async def _read_all(relay: ChannelRelay, ref: dict[str, str]) -> tuple[list[bytes], int | None]:
    reader = relay.open_local(ref["channel_id"], ref["access_key"], "read")
    got: list[bytes] = []
    try:
        while True:
            message = await reader.recv()
            assert isinstance(message, bytes)
            got.append(message)
    except ConnectionClosed as exc:
        return got, exc.rcvd.code if exc.rcvd is not None else None


@pytest.mark.parametrize("size", [0, 999, 1000, 1001, 1024, 1 << 20])
async def test_a_fill_over_the_quota_holds_only_what_the_quota_lets_through(size: int) -> None:
    relay = ChannelRelay(max_channel_bytes=1000)
    data = os.urandom(size)
    reserved = relay.create(None, owner=None)
    live = relay.create(None, owner=None)
    relay.stats(live["reader"]["channel_id"])  # made live before its fill: the old path
    for refs in (reserved, live):
        relay.fill(refs["writer"]["channel_id"], refs["writer"]["access_key"], data, 64)
    held = relay._reserved[reserved["reader"]["channel_id"]].fill
    assert held is not None and len(held) <= min(size, 1000 + 64)
    assert await _read_all(relay, reserved["reader"]) == await _read_all(relay, live["reader"])


async def test_a_fill_over_a_per_channel_quota_of_zero_holds_nothing_past_one_message() -> None:
    relay = ChannelRelay()
    refs = relay.create(None, owner=None, max_bytes=0)
    relay.fill(refs["writer"]["channel_id"], refs["writer"]["access_key"], b"x" * (1 << 20), 64 * 1024)
    held = relay._reserved[refs["reader"]["channel_id"]].fill
    assert held is not None and len(held) <= 64 * 1024
    got, code = await _read_all(relay, refs["reader"])
    assert got == [] and code == 4001


async def test_production_mode_has_no_quota_and_keeps_the_whole_fill() -> None:
    relay = ChannelRelay(max_channel_bytes=10, production_mode=True)
    refs = relay.create(None, owner=None)
    relay.fill(refs["writer"]["channel_id"], refs["writer"]["access_key"], b"y" * 1000, 64)
    got, _ = await _read_all(relay, refs["reader"])
    assert b"".join(got) == b"y" * 1000
