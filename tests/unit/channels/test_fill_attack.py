"""Attacks on ``ChannelRelay.fill`` and local readers: a relay whose message limit is below the fill's chunk size,
a local reader at shutdown and after a discard."""

from __future__ import annotations

import asyncio
import os

import pytest
from websockets.exceptions import ConnectionClosed

from iii_engine.channels import ChannelRelay


async def test_fill_cuts_the_body_to_the_relay_s_message_limit_instead_of_aborting() -> None:
    relay = ChannelRelay(max_message_size=1000)  # an operator's channels.max_message_size below 64 KiB
    refs = relay.create(None, owner=None)
    body = os.urandom(5000)
    relay.fill(refs["writer"]["channel_id"], refs["writer"]["access_key"], body, 64 * 1024)
    r = refs["reader"]
    reader = relay.open_local(r["channel_id"], r["access_key"], "read")
    got = [message async for message in reader]  # an abort would raise here (4001)
    assert b"".join(m if isinstance(m, bytes) else m.encode() for m in got) == body
    assert max(len(m) for m in got) <= 1000 and len(relay) == 0


async def test_a_local_reader_waiting_at_shutdown_or_discard_ends_as_aborted() -> None:
    for how in ("close", "discard"):
        relay = ChannelRelay()
        refs = relay.create(None, owner=None)
        r = refs["reader"]
        reader = relay.open_local(r["channel_id"], r["access_key"], "read")
        waiting = asyncio.ensure_future(reader.recv())
        await asyncio.sleep(0)  # one loop turn (no timing): the reader is now waiting for a message
        if how == "close":
            await relay.close()
        else:
            relay.discard(r["channel_id"])
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(waiting, 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code != 1000, how
        assert len(relay) == 0
